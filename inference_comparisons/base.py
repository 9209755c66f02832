"""What every inference method returns, and the interface a method implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch

from zoo.base import Moments, Target

__all__ = ["PROFILES", "Cost", "InferenceMethod", "InferenceResult", "NotApplicable", "summarise_draws"]

#: Budget profiles every method declares a ladder for (the sweep's ``--budgets``).
PROFILES: tuple[str, ...] = ("quick", "default", "thorough")


class NotApplicable(Exception):
    """Raised (or returned as a reason) when a method cannot run on a target."""


@dataclass(frozen=True)
class Cost:
    """What a run cost: wall-clock seconds of the inference call (torch on one thread) and
    counted, machine-independent evaluations of the (collapsed) joint log density and of
    its gradient."""

    wall_s: float
    density_evals: int
    grad_evals: int


@dataclass(frozen=True)
class InferenceResult:
    """One method's answer on one target.

    ``draws`` map each latent site to ``(S, *site_shape)`` tensors; MCMC chains are
    concatenated (``num_chains`` of them, equal length). ``log_weights`` is ``(S,)`` for
    importance sampling and ``None`` when draws are equally weighted. Moments and local
    marginals are the method's estimates of the reference's; NaN log evidence means the
    method gives none.
    """

    method: str
    target: str
    budget: int
    budget_unit: str
    seed: int
    draws: dict[str, torch.Tensor]
    log_weights: torch.Tensor | None
    num_chains: int
    log_evidence: float
    log_evidence_se: float
    moments: dict[str, Moments]
    local_marginals: dict[str, torch.Tensor]
    cost: Cost
    diagnostics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def summarise_draws(target: Target, draws: Mapping[str, torch.Tensor],
                    log_weights: torch.Tensor | None = None) -> tuple[dict[str, Moments], dict[str, torch.Tensor]]:
    """Weighted moments of the quantities of interest and the Rao-Blackwellised local
    marginals ``E[p(z | x, theta)]`` over (possibly weighted) draws."""
    num = next(iter(draws.values())).shape[0] if draws else 0
    weights = (torch.full((num,), 1.0 / max(num, 1), dtype=torch.float64) if log_weights is None
               else (log_weights - log_weights.logsumexp(0)).exp().to(torch.float64))

    def weighted_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.tensordot(weights, x.to(torch.float64), dims=1)

    moments = {}
    for name, values in target.quantities(dict(draws)).items():
        mean = weighted_mean(values)
        sd = (weighted_mean((values - mean) ** 2)).clamp_min(0).sqrt()
        moments[name] = Moments(mean, sd, torch.full_like(mean, float("nan")))
    marginals = {}
    # Chunk over draws: per-draw marginals are (S, N, K) and S may be 10^5.
    for start in range(0, num, 2048):
        chunk = {k: v[start:start + 2048] for k, v in draws.items()}
        for name, value in target.local_marginals(chunk).items():
            part = torch.tensordot(weights[start:start + 2048], value.to(torch.float64), dims=1)
            marginals[name] = marginals.get(name, 0) + part
    return moments, marginals


class InferenceMethod(abc.ABC):
    """A registered inference algorithm.

    Subclasses set ``name``, ``budget_unit``, ``ladders`` (a budget ladder for each of
    :data:`PROFILES`) and ``description``, and implement :meth:`not_applicable` and
    :meth:`run`. ``run`` receives a seeded, single-threaded, clean Pyro state.
    """

    name: ClassVar[str]
    budget_unit: ClassVar[str]
    ladders: ClassVar[Mapping[str, tuple[int, ...]]]
    description: ClassVar[str]

    def not_applicable(self, target: Target) -> str | None:
        """Why this method cannot run on ``target``, or ``None`` if it can."""
        return None

    @abc.abstractmethod
    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        """Run on ``target`` with ``budget`` units; the caller times and seeds it."""
