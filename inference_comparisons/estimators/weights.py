"""Importance weights: how good they are (PSIS k̂), and equally weighted draws from them.

The log-mean-exp of weights, with its standard error, is :func:`zoo.numerics.log_mean_exp`
(the zoo's own analyses need it too).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from inference_comparisons._arviz import arviz

__all__ = ["normalised_weights", "per_datapoint_khat", "psis_khat", "systematic_resample"]


def normalised_weights(log_weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Self-normalised weights w / sum(w) along ``dim``, in float64."""
    log_weights = log_weights.to(torch.float64)
    return (log_weights - log_weights.logsumexp(dim, keepdim=True)).exp()


def _khat(log_weights: np.ndarray) -> np.ndarray:
    """PSIS k̂ along the last axis of float64 log weights."""
    # ArviZ warns when k̂ > 0.7 (here that is the measurement, not a problem), and its
    # generalised-Pareto fit overflows exp() harmlessly in a weighting term, on very peaked
    # tails and on the near-uniform weights an encoder gives where it fits well.
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.filterwarnings("ignore", message=".*shape parameter of Pareto.*")
        _, khat = arviz().psislw(log_weights - log_weights.max(-1, keepdims=True))
    return np.asarray(khat, dtype=np.float64)


def psis_khat(log_weights: torch.Tensor) -> float:
    """Pareto-smoothed importance sampling shape k̂ of the weights (Vehtari et al. 2024).

    k̂ < 0.5: the estimate is reliable; 0.5-0.7: slowly converging; > 0.7: unreliable.
    """
    lw = log_weights.detach().to(torch.float64).cpu().numpy()
    if lw.size < 5 or not np.isfinite(lw).any():
        return float("nan")
    return float(_khat(lw))


def per_datapoint_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """(N,) PSIS k̂ of each data point's K weights, from ``(K, N)`` log weights (NaN when
    K < 100: the Pareto tail fit uses ~3 sqrt(K) of them, too few below that for k̂ to mean
    anything)."""
    if log_weights.shape[0] < 100:
        return torch.full((log_weights.shape[1],), float("nan"), dtype=torch.float64)
    return torch.as_tensor(_khat(log_weights.T.detach().to(torch.float64).numpy())).reshape(-1)


def systematic_resample(log_weights: torch.Tensor, num_draws: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``num_draws`` equally weighted draws by systematic resampling: one uniform
    offset, then evenly spaced points through the cumulative normalised weights (lower
    variance than multinomial resampling; Douc, Cappé & Moulines 2005)."""
    weights = normalised_weights(log_weights)
    cumulative = weights.cumsum(0)
    cumulative[-1] = 1.0  # guard the last bin against rounding
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    points = (offset + torch.arange(num_draws, dtype=torch.float64)) / num_draws
    return torch.searchsorted(cumulative, points).clamp_max(len(weights) - 1)
