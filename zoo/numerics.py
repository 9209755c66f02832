"""Numerics shared by the zoo and the harness.

It lives in ``zoo`` because the zoo's own analyses need it too (the VAE's IWAE bound and
inference-gap decomposition) and the zoo never imports the harness; the harness's
estimators import it from here, so it exists once.
"""

from __future__ import annotations

import math

import torch

__all__ = ["log_mean_exp", "logsumexp_short", "softmax_short"]

#: Up to this length, an axis counts as short: mixture components, HMM states.
_SHORT_AXIS = 16


def logsumexp_short(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x.logsumexp(dim)`` for a short axis ``dim`` (a handful of mixture components or
    states), moved to the front first: torch's CPU kernels reduce a short innermost axis
    2-3x slower than a leading one, more than the copy costs (benchmarks/bench_importance.py)."""
    if x.dim() < 2 or x.shape[dim] > _SHORT_AXIS:
        return x.logsumexp(dim)
    return x.movedim(dim, 0).contiguous().logsumexp(0)


def softmax_short(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x.softmax(dim)`` for a short axis ``dim``, computed over a leading axis as in
    :func:`logsumexp_short` (~6x faster for 3 components); the result has ``x``'s shape."""
    if x.dim() < 2 or x.shape[dim] > _SHORT_AXIS:
        return x.softmax(dim)
    return x.movedim(dim, 0).contiguous().softmax(0).movedim(0, dim)


def log_mean_exp(log_weights: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """log (1/S) sum_s w_s along ``dim`` of the log weights, and its delta-method standard
    error sd(w) / (mean(w) sqrt(S)) (``inf`` for a single weight).

    ``log_weights`` of shape ``(S,)`` give 0-d tensors; ``(K, N)`` weights of K particles
    for each of N data points give ``(N,)`` per-datapoint estimates (the IWAE bound)."""
    num = log_weights.shape[dim]
    estimate = log_weights.logsumexp(dim) - math.log(num)
    if num < 2:
        return estimate, torch.full_like(estimate, math.inf)
    normalised = (log_weights - log_weights.amax(dim, keepdim=True)).exp()
    se = normalised.std(dim) / (normalised.mean(dim) * math.sqrt(num))
    return estimate, se
