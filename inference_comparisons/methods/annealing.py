"""Evidence estimators that anneal from the prior to the posterior, scored against the zoo's
exact or gold-standard log evidence, with their particles as a weighted posterior.

- ``ais``: annealed importance sampling (Neal 2001) on a fixed schedule
  (:func:`~inference_comparisons.estimators.annealing.anneal`); the budget is the number of
  temperatures, the particles are fixed.
- ``smc``: tempered sequential Monte Carlo with adaptive temperatures and resampling
  (:func:`~inference_comparisons.estimators.annealing.smc`); the budget is the number of
  particles, the temperatures follow from them. Its standard error comes from
  :data:`NUM_ISLANDS` independent islands.

Both move their particles in one batch with the lockstep HMC kernel or, on the discrete
locals of a ``latent`` target (the mixture's, the HMM's), with the target's Gibbs sweeps.
"""

from __future__ import annotations

import torch

from zoo.augmentation import TemperedGibbs
from zoo.base import Target
from zoo.numerics import log_mean_exp

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.annealing import TARGET_CESS, Moves, Particles, anneal, smc, tempered_moves
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.weights import psis_khat
from inference_comparisons.methods.mcmc import hamiltonian_not_applicable

__all__ = ["AIS", "SMC"]

#: Particles annealed together: one batched gradient moves them all.
NUM_PARTICLES = 128
#: Leapfrog steps of each HMC transition. Short transitions at more temperatures beat long
#: ones at fewer, gradient for gradient: on factor analysis' latent target (400 Gaussian
#: locals), AIS with 1,000 temperatures of 5 steps fell 5.3 nats (12 standard errors) short of
#: the exact evidence, with 20 steps 3.0; 2,500 temperatures of 2 steps (the same gradients
#: within a quarter) came within 0.6 (one standard error). The variance of AIS's log weights
#: falls as 1/T with the temperatures T (Neal 2001), while longer moves only refine each
#: temperature's equilibrium. SMC's moves (below) likewise.
NUM_LEAPFROG = 2
#: SMC's independent islands of particles (their spread gives the standard error).
NUM_ISLANDS = 8
#: SMC's moves at each temperature, after resampling: HMC transitions, or Gibbs sweeps of
#: discrete locals. Resampled duplicates must move apart before the next reweighting: with 2
#: transitions of 5 steps (and the conditional ESS kept at 0.5), 1,024 particles fell 1.85
#: nats (5 standard errors) short of factor analysis' posterior evidence and 18 of its latent
#: one; with 5 of 2 steps (and :data:`TARGET_CESS`, twice the temperatures; about twice the
#: gradients), 0.12 (0.5 standard errors) and 0.29 (1.5). (With 2 sweeps, the HMM's
#: single-site sweeps left 1,024 particles 2.3 nats, 4 standard errors, short of the exact
#: evidence; with five or ten, within one. A sweep costs about one density pass.)
NUM_MOVES = 5


def _result(method: InferenceMethod, target: Target, budget: int, seed: int, moves: Moves, x: Particles,
            log_weights: torch.Tensor, log_evidence: float, se: float, khat: float) -> InferenceResult:
    """The weighted particles ``x`` as a posterior, with the evidence estimate."""
    draws = moves.draws(x)
    density_evals, grad_evals = moves.cost()
    moments, marginals = summarise_draws(target, draws, log_weights)
    return InferenceResult(
        method=method.name, target=target.name, budget=budget, budget_unit=method.budget_unit, seed=seed,
        kind=ResultKind.IMPORTANCE, draws=draws, log_weights=log_weights,
        log_evidence=log_evidence, log_evidence_se=se, moments=moments, local_marginals=marginals,
        cost=Cost(wall_s=0.0, density_evals=density_evals, grad_evals=grad_evals),
        diagnostics=Diagnostics(khat=khat),
    )


def _not_applicable(target: Target) -> str | None:
    if isinstance(target, TemperedGibbs):
        return None  # discrete locals that its Gibbs sweeps move
    return hamiltonian_not_applicable(target)  # otherwise its moves are HMC transitions


class AIS(InferenceMethod):
    name = "ais"
    budget_unit = "temperatures"
    # 2,500 temperatures: at 100, 128 particles on the 200 discrete locals of the mixture
    # and the HMM fell 2.8 and 4.3 nats (8 standard errors) short of the exact evidence, at
    # 1,000 within two standard errors (k̂ 0.3 and 0.6); factor analysis' 400 Gaussian
    # locals need 2,500 (see NUM_LEAPFROG).
    ladders = {"quick": (30,), "default": (250, 2500), "thorough": (250, 2500, 10000)}
    description = (f"annealed importance sampling from the prior, {NUM_PARTICLES} particles in one batch, one HMC "
                   f"move of {NUM_LEAPFROG} leapfrog steps (or a Gibbs sweep of discrete locals) per temperature, "
                   f"schedule (t/T)^4")
    smoke_budget = 3

    def not_applicable(self, target: Target) -> str | None:
        return _not_applicable(target)

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        moves = tempered_moves(target, NUM_LEAPFROG)
        annealed = anneal(moves, NUM_PARTICLES, budget)
        log_evidence, se = log_mean_exp(annealed.log_weights)
        return _result(self, target, budget, seed, moves, annealed.x, annealed.log_weights, float(log_evidence),
                       float(se), psis_khat(annealed.log_weights))


class SMC(InferenceMethod):
    name = "smc"
    budget_unit = "particles"
    ladders = {"quick": (256,), "default": (256, 1024), "thorough": (1024, 4096)}
    description = (f"tempered SMC from the prior: temperatures chosen to keep the conditional ESS at {TARGET_CESS:g} "
                   f"of the particles, systematic resampling, {NUM_MOVES} HMC moves of {NUM_LEAPFROG} leapfrog steps "
                   f"(or Gibbs sweeps of discrete locals) per temperature; {NUM_ISLANDS} independent islands give the "
                   f"standard error")
    smoke_budget = 2 * NUM_ISLANDS

    def not_applicable(self, target: Target) -> str | None:
        return _not_applicable(target)

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        if budget % NUM_ISLANDS:
            raise ValueError(f"smc's budget must be a multiple of its {NUM_ISLANDS} islands, got {budget} particles")
        moves = tempered_moves(target, NUM_LEAPFROG, population_mass=True)
        particles = smc(moves, budget, NUM_ISLANDS, NUM_MOVES)
        log_evidence, se = log_mean_exp(particles.log_evidence)
        # Each island's particles are equally weighted; islands weigh as their evidence.
        log_weights = particles.log_evidence.repeat_interleave(budget // NUM_ISLANDS)
        # k̂ of weights that take NUM_ISLANDS values would mean nothing: none is reported.
        return _result(self, target, budget, seed, moves, particles.x, log_weights, float(log_evidence), float(se),
                       float("nan"))
