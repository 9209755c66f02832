"""Evidence estimators that anneal from the prior to the posterior, scored against the zoo's
exact or gold-standard log evidence, with their particles as a weighted posterior.

- ``ais``: annealed importance sampling (Neal 2001) on a fixed schedule
  (:func:`~inference_comparisons.estimators.annealing.anneal`); the budget is the number of
  temperatures, the particles are fixed.
- ``smc``: tempered sequential Monte Carlo with adaptive temperatures and resampling
  (:func:`~inference_comparisons.estimators.annealing.smc`); the budget is the number of
  particles, the temperatures follow from them. Its standard error comes from
  :data:`NUM_ISLANDS` independent islands.

Both move their particles in one batch with the lockstep HMC kernel.
"""

from __future__ import annotations

import torch

from zoo.base import Target
from zoo.numerics import log_mean_exp

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.annealing import anneal, smc
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.estimators.weights import psis_khat
from inference_comparisons.methods.mcmc import hamiltonian_not_applicable

__all__ = ["AIS", "SMC"]

#: Particles annealed together: one batched gradient moves them all.
NUM_PARTICLES = 128
#: Leapfrog steps of each HMC transition.
NUM_LEAPFROG = 5
#: SMC's independent islands of particles (their spread gives the standard error).
NUM_ISLANDS = 8
#: SMC's HMC transitions at each temperature, after resampling.
NUM_MOVES = 2

def _result(method: InferenceMethod, target: Target, budget: int, seed: int, space: FlatPotential,
            x: torch.Tensor, log_weights: torch.Tensor, log_evidence: float, se: float,
            khat: float) -> InferenceResult:
    """The weighted particles ``x`` (flat) as a posterior, with the evidence estimate."""
    with torch.no_grad():
        draws, _ = space.constrained(x)
    moments, marginals = summarise_draws(target, draws, log_weights)
    return InferenceResult(
        method=method.name, target=target.name, budget=budget, budget_unit=method.budget_unit, seed=seed,
        kind=ResultKind.IMPORTANCE, draws=draws, log_weights=log_weights,
        log_evidence=log_evidence, log_evidence_se=se, moments=moments, local_marginals=marginals,
        cost=Cost(wall_s=0.0, density_evals=space.counted.density_evals, grad_evals=space.counted.grad_evals),
        diagnostics=Diagnostics(khat=khat),
    )


class AIS(InferenceMethod):
    name = "ais"
    budget_unit = "temperatures"
    ladders = {"quick": (30,), "default": (30, 100), "thorough": (100, 300, 1000)}
    description = (f"annealed importance sampling from the prior, {NUM_PARTICLES} particles in one batch, one HMC "
                   f"move of {NUM_LEAPFROG} leapfrog steps per temperature, schedule (t/T)^4")
    smoke_budget = 3

    def not_applicable(self, target: Target) -> str | None:
        return hamiltonian_not_applicable(target)  # its moves are HMC transitions

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        space = FlatPotential(target)
        annealed = anneal(target, space, NUM_PARTICLES, budget, NUM_LEAPFROG)
        log_evidence, se = log_mean_exp(annealed.log_weights)
        return _result(self, target, budget, seed, space, annealed.x, annealed.log_weights, float(log_evidence),
                       float(se), psis_khat(annealed.log_weights))


class SMC(InferenceMethod):
    name = "smc"
    budget_unit = "particles"
    ladders = {"quick": (256,), "default": (256, 1024), "thorough": (1024, 4096)}
    description = (f"tempered SMC from the prior: temperatures chosen to keep the conditional ESS at half, systematic "
                   f"resampling, {NUM_MOVES} HMC moves of {NUM_LEAPFROG} leapfrog steps per temperature; "
                   f"{NUM_ISLANDS} independent islands give the standard error")
    smoke_budget = 2 * NUM_ISLANDS

    def not_applicable(self, target: Target) -> str | None:
        return hamiltonian_not_applicable(target)  # its moves are HMC transitions

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        if budget % NUM_ISLANDS:
            raise ValueError(f"smc's budget must be a multiple of its {NUM_ISLANDS} islands, got {budget} particles")
        space = FlatPotential(target)
        particles = smc(target, space, budget, NUM_ISLANDS, NUM_MOVES, NUM_LEAPFROG)
        log_evidence, se = log_mean_exp(particles.log_evidence)
        # Each island's particles are equally weighted; islands weigh as their evidence.
        log_weights = particles.log_evidence.repeat_interleave(budget // NUM_ISLANDS)
        # k̂ of weights that take NUM_ISLANDS values would mean nothing: none is reported.
        return _result(self, target, budget, seed, space, particles.x, log_weights, float(log_evidence), float(se),
                       float("nan"))
