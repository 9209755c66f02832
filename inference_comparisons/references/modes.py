"""The posterior's modes, found before any chain runs: NUTS chains do not cross between
separated modes, and R-hat notices only when a chain happens to start in another one.

L-BFGS from random starts in Pyro's unconstrained space finds the local maxima; each gets
its Laplace approximation, whose mass says whether a mode the chains would miss matters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from zoo.base import Target

from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.references.chains import save_atomically

__all__ = ["MODE_SEARCH_STARTS", "Mode", "find_modes", "modes_of"]

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


def find_modes(problem: Target, num_starts: int = MODE_SEARCH_STARTS) -> tuple[list[Mode], dict[str, int]]:
    """The posterior's modes found by L-BFGS from ``num_starts`` uniform(-2, 2) starts (the
    support of Pyro's ``init_to_uniform``), heaviest Laplace mass first, and a summary
    ``{"starts", "converged", "grad_evals"}``. Two optima are one mode when they are within
    one unit of Mahalanobis distance under the first one's covariance (within 1e-3 in
    Euclidean distance where it has none), so symmetric copies of a mode stay separate."""
    potential = FlatPotential(problem)
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
    return modes, {"starts": num_starts, "converged": converged, "grad_evals": potential.counted.grad_evals}


def modes_of(problem: Target, directory: Path) -> tuple[list[Mode], dict]:
    """The mode search, run once per build directory: a resumed build keeps the mode its
    chains started from."""
    path = directory / "modes.pt"
    if path.exists():
        saved = torch.load(path)
        return [Mode(**mode) for mode in saved["modes"]], saved["summary"]
    modes, summary = find_modes(problem)
    save_atomically({"modes": [asdict(m) for m in modes], "summary": summary}, path)
    return modes, summary
