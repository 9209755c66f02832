"""Importance sampling with the prior, or a fitted mean-field guide, as the proposal.

All particles go through one vectorised model pass per chunk (no Python loop over
particles). Importance sampling cannot enumerate, so the weights use the target's
collapsed model, in which discrete sites that are not inferred are summed out
analytically (Pyro's own importance sampler would silently sample them from the prior).
Output: the log evidence ``logmeanexp(log w)`` with its delta-method standard error, the
self-normalised posterior, and the PSIS k̂ of the weights.
"""

from __future__ import annotations

from typing import Callable

from zoo.base import Target
from zoo.numerics import log_mean_exp

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.particles import importance_log_weights, prior_proposal
from inference_comparisons.estimators.weights import psis_khat
from inference_comparisons.methods.svi import fit_guide

__all__ = ["ImportanceGuide", "ImportancePrior"]

_PARTICLE_LADDERS = {"quick": (1_000, 10_000), "default": (1_000, 10_000, 100_000),
                     "thorough": (10_000, 100_000, 1_000_000)}


class _Importance(InferenceMethod):
    budget_unit = "particles"
    ladders = _PARTICLE_LADDERS
    smoke_budget = 200

    def _result(self, target: Target, budget: int, seed: int, proposal: Callable[[], None], grad_evals: int,
                losses: tuple[float, ...] = ()) -> InferenceResult:
        log_weights, draws = importance_log_weights(
            target.collapsed_model, proposal, budget, target.max_plate_nesting, target.latent_sites)
        log_evidence, se = log_mean_exp(log_weights)
        moments, marginals = summarise_draws(target, draws, log_weights)
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            kind=ResultKind.IMPORTANCE, draws=draws, log_weights=log_weights,
            log_evidence=float(log_evidence), log_evidence_se=float(se), moments=moments, local_marginals=marginals,
            cost=Cost(wall_s=0.0, density_evals=budget, grad_evals=grad_evals),
            diagnostics=Diagnostics(khat=psis_khat(log_weights)), losses=losses,
        )


class ImportancePrior(_Importance):
    name = "is_prior"
    description = "importance sampling, prior as proposal"

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        return self._result(target, budget, seed, prior_proposal(target.collapsed_model), 0)


class ImportanceGuide(_Importance):
    name = "is_guide"
    description = "importance sampling, fitted mean-field guide as proposal"

    def __init__(self, guide_steps: int = 1000) -> None:
        """``guide_steps`` SVI steps fit the proposal; their gradients are part of the cost."""
        self.guide_steps = guide_steps

    def for_smoke_test(self) -> "ImportanceGuide":
        return ImportanceGuide(guide_steps=20)

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        fitted = fit_guide(target, self.guide_steps)
        return self._result(target, budget, seed, fitted.guide, fitted.grad_evals, tuple(fitted.losses))
