"""The method contract: what every inference method returns, and the interface it implements."""

from __future__ import annotations

import abc
import enum
import math
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import torch

from zoo.base import Moments, Target

__all__ = ["PROFILES", "Cost", "Diagnostics", "InferenceMethod", "InferenceResult", "NotApplicable", "ResultKind"]

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


class ResultKind(str, enum.Enum):
    """What kind of answer a method gives: it decides how the answer becomes an ArviZ
    ``InferenceData`` (and, for calibration, how draws are made independent)."""

    #: A closed form: moments and marginals, and independent draws from the exact posterior.
    EXACT = "exact"
    #: ``num_chains`` Markov chains of equal length, concatenated; ``sample_stats`` per draw.
    MCMC = "mcmc"
    #: Weighted particles: ``log_weights`` (S,) with the draws.
    IMPORTANCE = "importance"
    #: Independent, equally weighted draws (a fitted guide's samples; resampled particles).
    INDEPENDENT = "independent"


@dataclass(frozen=True)
class Diagnostics:
    """A method's own diagnostics (NaN where it has none): the PSIS k̂ of its importance
    weights or of its guide used as a proposal; for MCMC the smallest bulk ESS and largest
    split R-hat over the quantities of interest, and the number of divergent draws."""

    khat: float = math.nan
    ess_min: float = math.nan
    rhat_max: float = math.nan
    divergences: float = math.nan


@dataclass(frozen=True)
class InferenceResult:
    """One method's answer on one target.

    ``draws`` map each latent site to ``(S, *site_shape)`` tensors (MCMC chains
    concatenated). Moments and local marginals are the method's estimates of the
    reference's; a NaN log evidence means the method gives none. The optional parts, each
    filled by the kinds of method that have them:

    - ``log_weights`` ``(S,)``: importance sampling (``kind`` IMPORTANCE), and only then;
    - ``sample_stats``: MCMC's per-draw sampler statistics, each ``(S,)``
      (:data:`~inference_comparisons.estimators.sampler_stats.SAMPLE_STAT_NAMES`);
    - ``losses``: the loss trace of an optimisation (SVI fits), one value per step;
    - ``per_datapoint``: per-datapoint values, each ``(N,)`` (an amortised guide's ELBO
      and k̂, the IWAE bound);
    - ``note``: why a column the method could be expected to fill is empty (the row's
      message carries it).
    """

    method: str
    target: str
    budget: int
    budget_unit: str
    seed: int
    kind: ResultKind
    draws: dict[str, torch.Tensor]
    log_evidence: float
    log_evidence_se: float
    moments: dict[str, Moments]
    local_marginals: dict[str, torch.Tensor]
    cost: Cost
    diagnostics: Diagnostics = Diagnostics()
    num_chains: int = 1
    log_weights: torch.Tensor | None = None
    sample_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    losses: tuple[float, ...] = ()
    per_datapoint: dict[str, torch.Tensor] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if (self.kind is ResultKind.IMPORTANCE) != (self.log_weights is not None):
            raise ValueError(f"{self.method}: log_weights go with, and only with, kind IMPORTANCE (kind {self.kind})")
        if not self.draws:
            raise ValueError(f"{self.method}: a result of kind {self.kind} has no draws")
        num = next(iter(self.draws.values())).shape[0] if self.draws else 0
        if self.kind is ResultKind.MCMC and (self.num_chains < 1 or num % self.num_chains):
            raise ValueError(f"{self.method}: {num} MCMC draws do not split into {self.num_chains} equal chains")

    @property
    def num_draws(self) -> int:
        return next(iter(self.draws.values())).shape[0] if self.draws else 0


class InferenceMethod(abc.ABC):
    """A registered inference algorithm.

    Subclasses set ``name``, ``budget_unit``, ``ladders`` (a budget ladder for each of
    :data:`PROFILES`), ``description`` and ``smoke_budget``, and implement
    :meth:`not_applicable` and :meth:`run`. ``run`` receives a seeded, single-threaded,
    clean Pyro state, and counts density and gradient evaluations in its :class:`Cost`.
    """

    name: ClassVar[str]
    budget_unit: ClassVar[str]
    ladders: ClassVar[Mapping[str, tuple[int, ...]]]
    description: ClassVar[str]
    #: The smallest budget that runs every code path: the tests run every method on every
    #: target at it (plumbing, not accuracy).
    smoke_budget: ClassVar[int]
    #: Whether a sweep that names no methods runs this one (``run`` without ``--methods``,
    #: ``make run``); a method still being made fast enough for that says False, and runs
    #: when asked for by name.
    in_default_sweep: ClassVar[bool] = True
    #: Whether the answer is one point (MAP, EM): no spread, no draws to rank, so no
    #: simulation-based calibration.
    point_estimate: ClassVar[bool] = False

    def for_smoke_test(self) -> "InferenceMethod":
        """This method as the tests' tiny runs should use it: itself, unless part of its cost
        is fixed outside its budget (``is_guide``'s guide fit), which then shrinks too."""
        return self

    def not_applicable(self, target: Target) -> str | None:
        """Why this method cannot run on ``target``, or ``None`` if it can."""
        return None

    @abc.abstractmethod
    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        """Run on ``target`` with ``budget`` units; the caller times and seeds it."""
