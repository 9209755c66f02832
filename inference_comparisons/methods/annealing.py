"""Annealed importance sampling (Neal 2001): an evidence estimator, scored against the zoo's
exact or gold-standard log evidence, with its particles as a weighted posterior.

The particles anneal from the prior to the posterior in one batch
(:func:`~inference_comparisons.estimators.annealing.anneal`: the schedule, the tempered
densities and the HMC moves, the lockstep kernel's). The budget is the number of
temperatures; the particles and the leapfrog steps per move are fixed.
"""

from __future__ import annotations

import torch

from zoo.base import Target
from zoo.numerics import log_mean_exp

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.annealing import anneal
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.estimators.weights import psis_khat

__all__ = ["AIS"]

#: Particles annealed together: one batched gradient moves them all.
NUM_PARTICLES = 128
#: Leapfrog steps of the one HMC transition at each temperature.
NUM_LEAPFROG = 5


class AIS(InferenceMethod):
    name = "ais"
    budget_unit = "temperatures"
    ladders = {"quick": (30,), "default": (30, 100), "thorough": (100, 300, 1000)}
    description = (f"annealed importance sampling from the prior, {NUM_PARTICLES} particles in one batch, one HMC "
                   f"move of {NUM_LEAPFROG} leapfrog steps per temperature, schedule (t/T)^4")
    smoke_budget = 3

    def not_applicable(self, target: Target) -> str | None:
        if target.discrete_sites or not target.continuous_sites:
            return "its moves are HMC transitions: discrete latents would need a Gibbs kernel, not built yet"
        return None

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        space = FlatPotential(target)
        annealed = anneal(target, space, NUM_PARTICLES, budget, NUM_LEAPFROG)
        with torch.no_grad():
            draws, _ = space.constrained(annealed.x)
        log_evidence, se = log_mean_exp(annealed.log_weights)
        moments, marginals = summarise_draws(target, draws, annealed.log_weights)
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            kind=ResultKind.IMPORTANCE, draws=draws, log_weights=annealed.log_weights,
            log_evidence=float(log_evidence), log_evidence_se=float(se), moments=moments, local_marginals=marginals,
            cost=Cost(wall_s=0.0, density_evals=space.counted.density_evals, grad_evals=space.counted.grad_evals),
            diagnostics=Diagnostics(khat=psis_khat(annealed.log_weights)),
        )
