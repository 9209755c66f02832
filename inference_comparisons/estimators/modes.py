"""The posterior's modes: L-BFGS from random starts in Pyro's unconstrained space finds the
local maxima, and each gets its Laplace approximation, whose mass says how much a sampler
that misses the mode would lose.

Two users: the gold-standard builder (:mod:`inference_comparisons.references.modes`) refuses a
posterior whose other modes matter, and the lockstep samplers start their superchains at
draws from the heaviest mode's Laplace approximation (:func:`laplace_starts`), because a
superchain started uniformly can sit in a local mode for its whole warm-up and inflate the
shared mass matrix of every chain (the HMM: a mode 60 nats below the main one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from inference_comparisons.estimators.potential import FlatPotential

__all__ = ["MODE_SEARCH_STARTS", "Mode", "find_modes", "laplace_starts"]

#: L-BFGS runs, from uniform(-2, 2) starts in the unconstrained space, of the mode search.
MODE_SEARCH_STARTS = 20


@dataclass(frozen=True)
class Mode:
    """A local maximum of the posterior density in Pyro's unconstrained coordinates.

    ``location`` and ``covariance`` (the inverse Hessian of the potential there, ``None``
    where it is not positive definite) are flat over ``target.continuous_sites``;
    ``log_mass`` is the Laplace approximation of the mode's log posterior mass up to a
    constant shared by all modes (``nan`` without a covariance); ``starts`` counts the
    optimisations that ended in it."""

    location: torch.Tensor
    potential: float
    covariance: torch.Tensor | None
    log_mass: float
    starts: int


def _optimise(potential: FlatPotential, start: torch.Tensor) -> torch.Tensor | None:
    """L-BFGS from ``start``; the optimum, or ``None`` if it did not converge."""
    x = start.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([x], max_iter=2_000, tolerance_grad=1e-7, tolerance_change=1e-12,
                                  history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = potential(x)
        value.backward()
        return value

    try:
        optimiser.step(closure)
    except (ValueError, RuntimeError):  # a non-finite density along the way
        return None
    x.grad = None
    (gradient,) = torch.autograd.grad(potential(x), x)
    return x.detach() if bool(torch.isfinite(gradient).all()) and float(gradient.abs().max()) < 1e-3 else None


def find_modes(potential: FlatPotential, num_starts: int = MODE_SEARCH_STARTS
               ) -> tuple[list[Mode], dict[str, int]]:
    """The modes of ``potential`` found by L-BFGS from ``num_starts`` uniform(-2, 2) starts
    (the support of Pyro's ``init_to_uniform``), heaviest Laplace mass first, and a summary
    ``{"starts", "converged", "grad_evals"}`` (the gradients this search added to the
    potential's counter). Two optima are one mode when they are within
    one unit of Mahalanobis distance under the first one's covariance (within 1e-3 in
    Euclidean distance where it has none), so symmetric copies of a mode stay separate."""
    grad_evals_before = potential.counted.grad_evals
    modes: list[Mode] = []
    converged = 0
    for _ in range(num_starts):
        optimum = _optimise(potential, 4 * torch.rand(potential.dim, dtype=torch.float64) - 2)
        if optimum is None:
            continue
        converged += 1
        for i, mode in enumerate(modes):
            delta = optimum - mode.location
            if mode.covariance is not None:
                same = float(delta @ torch.linalg.solve(mode.covariance, delta)) < 1.0
            else:
                same = float(delta.norm()) < 1e-3
            if same:
                modes[i] = replace(mode, starts=mode.starts + 1)
                break
        else:
            value = float(potential(optimum))
            hessian = torch.autograd.functional.hessian(potential, optimum)
            hessian = (hessian + hessian.T) / 2
            if bool(torch.isfinite(hessian).all()) and float(torch.linalg.eigvalsh(hessian).min()) > 0:
                covariance = torch.linalg.inv(hessian)
                log_mass = -value + 0.5 * float(torch.linalg.slogdet(covariance)[1])
            else:
                covariance, log_mass = None, float("nan")
            modes.append(Mode(optimum, value, covariance, log_mass, 1))
    modes.sort(key=lambda m: -m.log_mass if m.covariance is not None else math.inf)
    return modes, {"starts": num_starts, "converged": converged,
                   "grad_evals": potential.counted.grad_evals - grad_evals_before}


def laplace_starts(potential: FlatPotential, num_starts: int, num_draws: int) -> torch.Tensor | None:
    """``num_draws`` independent draws (num_draws, d) from the Laplace approximation of the
    heaviest mode that L-BFGS finds from ``num_starts`` uniform starts, or ``None`` when no
    optimum has a positive-definite Hessian. Chains started there begin in the posterior's
    bulk, dispersed about as much as the posterior, so the nested R-hat can still see
    whether they forget their starts; a mode lighter than the heaviest one found is left
    out, which the score against a reference shows, as it would for any sampler started in
    one basin. The search's gradients are counted on ``potential``."""
    modes, _ = find_modes(potential, num_starts)
    if not modes or modes[0].covariance is None:
        return None
    covariance = (modes[0].covariance + modes[0].covariance.T) / 2
    normal = torch.distributions.MultivariateNormal(modes[0].location, covariance)
    return normal.sample((num_draws,))
