"""Exact inference in linear-Gaussian state-space models: the Kalman filter, the
Rauch-Tung-Striebel smoother and forward filtering, backward sampling.

The model (column vectors; ``A`` is D x D, ``C`` is P x D)::

    z_1 ~ Normal(m_0, P_0),    z_t = A z_{t-1} + eta_t,  eta_t ~ Normal(0, Q),
    x_t = C z_t + eps_t,       eps_t ~ Normal(0, R).

Every function takes the parameters with any leading batch shape (one set per posterior
draw) and the data ``(T, P)``; every covariance update is symmetrised, and the gains come
from Cholesky solves, never explicit inverses. A parameter draw whose innovation covariance
cannot be factorised gets a NaN log likelihood, as the zoo's draws rule asks.

The *exact diffuse* first state (Durbin & Koopman 2012, §5.2 and §2.9) is the limit
P_0 = kappa I, kappa -> infinity, with the divergent (D/2) log kappa removed from the log
likelihood. For a square, invertible C (every state observed at the first step: the local
level model) the limit is closed: z_1 | x_1 ~ Normal(C^-1 x_1, C^-1 R C^-T), and the first
step contributes -(P/2) log(2 pi) - log|det C| (Durbin & Koopman's log L_d, eq. 2.63,
keeps the first step's log(2 pi) term, as statsmodels does).

References: Kalman (1960) J. Basic Engineering 82:35; Rauch, Tung & Striebel (1965) AIAA J.
3:1445; Frühwirth-Schnatter (1994) J. Time Series Analysis 15:183 and Carter & Kohn (1994)
Biometrika 81:541 (backward sampling); Durbin & Koopman (2012) *Time Series Analysis by
State Space Methods*, 2nd ed., ch. 2, 4 and 5.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["KalmanFilter", "kalman_filter", "rts_smoother", "sample_states"]

_LOG_2PI = math.log(2 * math.pi)


class KalmanFilter(NamedTuple):
    """The filter's output, each with the parameters' batch shape in front.

    ``predicted_loc/cov``: p(z_t | x_{<t}), ``(..., T, D)`` and ``(..., T, D, D)``;
    ``filtered_loc/cov``: p(z_t | x_{<=t}); ``step_log_likelihood``: log p(x_t | x_{<t}),
    ``(..., T)``, which sum to log p(x)."""

    predicted_loc: torch.Tensor
    predicted_cov: torch.Tensor
    filtered_loc: torch.Tensor
    filtered_cov: torch.Tensor
    step_log_likelihood: torch.Tensor


def _symmetric(matrix: torch.Tensor) -> torch.Tensor:
    return (matrix + matrix.transpose(-1, -2)) / 2


def _diffuse_first_step(x: torch.Tensor, emission: torch.Tensor, obs_cov: torch.Tensor,
                        state_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kappa -> infinity limit of the first update: (loc, cov, log-likelihood term)."""
    if emission.shape[-2] != state_dim:
        raise ValueError(f"kalman_filter: an exact diffuse first state needs every state observed at the first "
                         f"step (a square, invertible emission matrix); got a {tuple(emission.shape[-2:])} one")
    loc = torch.linalg.solve(emission, x.expand(emission.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    inverse = torch.linalg.inv(emission)
    cov = _symmetric(inverse @ obs_cov @ inverse.transpose(-1, -2))
    term = -state_dim / 2 * _LOG_2PI - torch.linalg.slogdet(emission).logabsdet
    return loc, cov, term


def kalman_filter(data: torch.Tensor, transition: torch.Tensor, emission: torch.Tensor, state_cov: torch.Tensor,
                  obs_cov: torch.Tensor, initial_loc: torch.Tensor, initial_cov: torch.Tensor, *,
                  diffuse: bool = False) -> KalmanFilter:
    """The Kalman filter of ``data`` ``(T, P)`` (see the module docstring for the model).

    With ``diffuse=True`` the first state is exact diffuse (``initial_loc/cov`` are then
    ignored) and ``step_log_likelihood`` sums to Durbin & Koopman's diffuse log likelihood."""
    num_steps, state_dim = data.shape[0], transition.shape[-1]
    batch = torch.broadcast_shapes(transition.shape[:-2], emission.shape[:-2], state_cov.shape[:-2],
                                   obs_cov.shape[:-2], initial_loc.shape[:-1], initial_cov.shape[:-2])
    loc, cov = initial_loc.expand(batch + (state_dim,)), initial_cov.expand(batch + (state_dim, state_dim))
    outputs: list[tuple[torch.Tensor, ...]] = []
    for t in range(num_steps):
        if t > 0:  # predict
            loc = (transition @ loc.unsqueeze(-1)).squeeze(-1)
            cov = _symmetric(transition @ cov @ transition.transpose(-1, -2) + state_cov)
        if t == 0 and diffuse:
            new_loc, new_cov, term = _diffuse_first_step(data[0], emission, obs_cov, state_dim)
            outputs.append((loc, cov, new_loc.expand_as(loc), new_cov.expand_as(cov), term.expand(batch)))
            loc, cov = outputs[-1][2], outputs[-1][3]
            continue
        innovation = data[t] - (emission @ loc.unsqueeze(-1)).squeeze(-1)  # v_t
        cross = emission @ cov  # C P, (..., P, D)
        innovation_cov = _symmetric(cross @ emission.transpose(-1, -2) + obs_cov)  # F_t
        # A parameter draw whose F_t cannot be factorised (variances that under- or overflow)
        # gets NaN, not an exception that would lose the rest of the batch.
        cholesky, info = torch.linalg.cholesky_ex(innovation_cov)
        gain_t = torch.cholesky_solve(cross, cholesky)  # K^T = F^-1 C P
        whitened = torch.linalg.solve_triangular(cholesky, innovation.unsqueeze(-1), upper=False).squeeze(-1)
        term = (-0.5 * whitened.square().sum(-1) - cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                - data.shape[-1] / 2 * _LOG_2PI).masked_fill(info > 0, math.nan)
        new_loc = loc + (gain_t.transpose(-1, -2) @ innovation.unsqueeze(-1)).squeeze(-1)
        new_cov = _symmetric(cov - cross.transpose(-1, -2) @ gain_t)  # P - P C^T F^-1 C P
        outputs.append((loc, cov, new_loc, new_cov, term))
        loc, cov = new_loc, new_cov
    stacked = [torch.stack(parts, dim=len(batch)) for parts in zip(*outputs)]
    return KalmanFilter(*stacked)


def _backward_gains(filtered: KalmanFilter, transition: torch.Tensor) -> torch.Tensor:
    """J_t = P_{t|t} A^T P_{t+1|t}^-1 for t = 1..T-1, ``(..., T-1, D, D)``."""
    cov_next = filtered.predicted_cov[..., 1:, :, :]
    cross = transition.unsqueeze(-3) @ filtered.filtered_cov[..., :-1, :, :]  # A P_{t|t}
    return torch.cholesky_solve(cross, torch.linalg.cholesky(cov_next)).transpose(-1, -2)


def rts_smoother(filtered: KalmanFilter, transition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p(z_t | x_{1:T}) by the Rauch-Tung-Striebel recursion: locs ``(..., T, D)`` and
    covariances ``(..., T, D, D)``."""
    gains = _backward_gains(filtered, transition)
    locs, covs = [filtered.filtered_loc[..., -1, :]], [filtered.filtered_cov[..., -1, :, :]]
    for t in range(gains.shape[-3] - 1, -1, -1):
        gain = gains[..., t, :, :]
        delta_loc = locs[-1] - filtered.predicted_loc[..., t + 1, :]
        delta_cov = covs[-1] - filtered.predicted_cov[..., t + 1, :, :]
        locs.append(filtered.filtered_loc[..., t, :] + (gain @ delta_loc.unsqueeze(-1)).squeeze(-1))
        covs.append(_symmetric(filtered.filtered_cov[..., t, :, :] + gain @ delta_cov @ gain.transpose(-1, -2)))
    batch_dim = filtered.filtered_loc.dim() - 2
    return torch.stack(locs[::-1], batch_dim), torch.stack(covs[::-1], batch_dim)


def sample_states(filtered: KalmanFilter, transition: torch.Tensor, num_samples: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``(num_samples, T, D)`` joint draws of the state path from p(z_{1:T} | x_{1:T}) (one
    parameter set, no batch shape): z_T from the last filtered law, then backwards
    z_t | z_{t+1}, x_{1:t} ~ Normal(m_t + J_t (z_{t+1} - A m_t), P_t - J_t A P_t)."""
    gains = _backward_gains(filtered, transition)
    num_steps, state_dim = filtered.filtered_loc.shape[-2:]

    def draw(loc: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        noise = torch.randn((num_samples, state_dim), dtype=loc.dtype, generator=generator)
        return loc + noise @ torch.linalg.cholesky(cov).transpose(-1, -2)

    path = [draw(filtered.filtered_loc[-1], filtered.filtered_cov[-1])]
    for t in range(num_steps - 2, -1, -1):
        gain, loc, cov = gains[t], filtered.filtered_loc[t], filtered.filtered_cov[t]
        mean = loc + (path[-1] - transition @ loc) @ gain.transpose(-1, -2)
        path.append(draw(mean, _symmetric(cov - gain @ transition @ cov)))
    return torch.stack(path[::-1], 1)
