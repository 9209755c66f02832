"""Posterior summaries of draws: weighted moments of the quantities of interest and
Rao-Blackwellised local marginals, over a whole dataset or per data point."""

from __future__ import annotations

from typing import Mapping

import torch

from zoo.base import Moments, Target

from inference_comparisons.estimators.particles import PARTICLE_CHUNK
from inference_comparisons.estimators.weights import normalised_weights

__all__ = ["per_datapoint_moments", "summarise_draws"]


def summarise_draws(target: Target, draws: Mapping[str, torch.Tensor],
                    log_weights: torch.Tensor | None = None) -> tuple[dict[str, Moments], dict[str, torch.Tensor]]:
    """Weighted moments of the quantities of interest and the Rao-Blackwellised local
    marginals ``E[p(z | x, theta)]`` over (possibly weighted) draws."""
    num = next(iter(draws.values())).shape[0] if draws else 0
    weights = (torch.full((num,), 1.0 / max(num, 1), dtype=torch.float64) if log_weights is None
               else normalised_weights(log_weights))

    def weighted_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.tensordot(weights, x.to(torch.float64), dims=1)

    moments = {}
    for name, values in target.quantities(dict(draws)).items():
        mean = weighted_mean(values)
        sd = (weighted_mean((values - mean) ** 2)).clamp_min(0).sqrt()
        moments[name] = Moments(mean, sd, torch.full_like(mean, float("nan")))
    marginals = {}
    # Chunk over draws as the weights' passes are chunked: per-draw marginals are (S, N, K),
    # S may be 10^5, and a chunk's tensors stay in cache.
    for start in range(0, num, PARTICLE_CHUNK):
        chunk = {k: v[start:start + PARTICLE_CHUNK] for k, v in draws.items()}
        for name, value in target.local_marginals(chunk).items():
            part = torch.tensordot(weights[start:start + PARTICLE_CHUNK], value.to(torch.float64), dims=1)
            marginals[name] = marginals.get(name, 0) + part
    return moments, marginals


def per_datapoint_moments(target: Target, draws: Mapping[str, torch.Tensor],
                          log_weights: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Self-normalised moments of each quantity of interest, per data point: ``(K, N)`` log
    weights of K particles for each of N data points, and quantities ``(K, N, ...)``.
    Returns, per quantity, (mean, sd, the effective sample size of the weights (N, 1..)),
    each shaped as one particle's quantity. A quantity that is not per data point raises
    ``ValueError``."""
    weights = normalised_weights(log_weights)  # (K, N)
    num_data = weights.shape[1]
    ess = 1.0 / weights.pow(2).sum(0)
    out = {}
    for name, values in target.quantities(dict(draws)).items():
        if values.dim() < 2 or values.shape[1] != num_data:
            raise ValueError(f"quantity {name!r} of shape {tuple(values.shape)} is not per data point")
        trailing = (1,) * (values.dim() - 2)
        w = weights.reshape(weights.shape + trailing)
        mean = (w * values).sum(0)
        sd = (w * (values - mean) ** 2).sum(0).clamp_min(0).sqrt()
        out[name] = (mean, sd, ess.reshape(ess.shape + trailing))
    return out
