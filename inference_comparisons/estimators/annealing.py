"""Annealing from the prior to the posterior, for many particles in one batch: the tempered
densities, annealed importance sampling (Neal 2001) on a fixed schedule, and tempered
sequential Monte Carlo with adaptive temperatures.

In Pyro's unconstrained coordinates x, with θ = T(x) the constrained values, the path is

    log π_β(x) = log p(θ) + log |det J(x)| + β log p(data | θ),   β from 0 to 1,

so π_0 is the prior and π_1 the posterior. Every particle starts at a prior draw; at each
temperature its log weight gains (β_t − β_{t−1}) log p(data | θ) and it then moves by an HMC
transition that leaves π_{β_t} invariant (the lockstep kernel, :func:`hmc_transition`, the
particles as its chains). The mean of the exponentiated weights is an unbiased estimate of
p(data) for any schedule and any invariant moves; the schedule and the moves only set its
variance.

Tempered SMC (Del Moral, Doucet & Jasra 2006; adaptive temperatures as in Jasra et al. 2011)
differs in two ways: each next temperature is chosen so that the conditional effective sample
size of the reweighting stays at :data:`TARGET_CESS` of the particles (Zhou, Johansen &
Aston 2016), and the particles are resampled before they move. Its evidence estimate, the
product over temperatures of the mean incremental weight, is unbiased too; its standard error
comes from independent islands of particles run side by side in the batch (each with its own
temperatures), whose evidence estimates are averaged.

The "prior" is each continuous latent site's own distribution: a ``posterior`` target's
priors over its globals, or the distribution of a ``latent`` target's locals (given the fixed
globals) as its model samples them. Both must not depend on another latent site, which holds
for every model of the zoo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from zoo.base import PosteriorTarget, Target

from inference_comparisons.estimators.lockstep import Batch, hmc_transition, initial_step_size
from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.estimators.weights import systematic_resample

__all__ = ["AnnealedParticles", "SMCParticles", "TemperedPotential", "anneal", "prior_distributions", "smc",
           "temperatures"]

#: HMC's step size is nudged after each temperature towards this mean acceptance.
TARGET_ACCEPTANCE = 0.65
#: The schedule β_t = (t / T)^POWER: dense near the prior, where one step of β moves the
#: tempered density most (the log likelihood of 200 points is in the hundreds).
POWER = 4
#: SMC's next temperature keeps the conditional ESS of the reweighting at this fraction.
TARGET_CESS = 0.5
#: SMC stops with an error after this many temperatures (a likelihood it cannot temper).
MAX_SMC_TEMPERATURES = 10_000


def prior_distributions(target: Target) -> dict[str, dist.Distribution]:
    """The prior of each continuous latent site of ``target`` (see the module docstring)."""
    if isinstance(target, PosteriorTarget):
        return {site: target.priors[site] for site in target.continuous_sites}
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(target.collapsed_model).get_trace()
    return {site: trace.nodes[site]["fn"] for site in target.continuous_sites}


def temperatures(num_temperatures: int) -> torch.Tensor:
    """β_0 = 0 < β_1 < … < β_T = 1 for T = ``num_temperatures`` (:data:`POWER`)."""
    return (torch.arange(num_temperatures + 1, dtype=torch.float64) / num_temperatures) ** POWER


class TemperedPotential:
    """−log π_β at a batch of flat unconstrained points, with its gradient: the space the
    HMC transitions move in at the current ``beta`` (a number, or one per point). Density and gradient evaluations are
    counted on ``space``'s counter (one of each per point: the prior's share is negligible)."""

    def __init__(self, space: FlatPotential, priors: dict[str, dist.Distribution]) -> None:
        self.space, self.priors, self.beta = space, priors, 0.0

    def parts(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(θ) + log |det J| and log p(data | θ) at ``flat`` (S, d), each (S,)."""
        values, log_det = self.space.constrained(flat)
        num = len(flat)
        log_prior = sum(prior.log_prob(values[site]).reshape(num, -1).sum(-1) for site, prior in self.priors.items())
        self.space.counted.density_evals += num
        log_joint = self.space.problem.log_density(values)
        return log_prior + log_det, log_joint - log_prior

    def log_likelihood(self, flat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.parts(flat)[1]

    def batch_potential_and_grad(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.evaluate(flat)[:2]

    def evaluate(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The potential, its gradient and the log likelihood, from one pass."""
        with torch.enable_grad():
            point = flat.detach().requires_grad_(True)
            base, likelihood = self.parts(point)
            potential = -(base + self.beta * likelihood)
            (grad,) = torch.autograd.grad(potential.sum(), point)
        self.space.counted.grad_evals += len(flat)
        return potential.detach(), grad, likelihood.detach()


@dataclass(frozen=True)
class AnnealedParticles:
    """The particles at β = 1 (S, d), flat and unconstrained, their log weights (S,), the
    mean HMC acceptance at each temperature (T,), and the final step size."""

    x: torch.Tensor
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    step_size: float


def anneal(target: Target, space: FlatPotential, num_particles: int, num_temperatures: int,
           num_leapfrog: int) -> AnnealedParticles:
    """Annealed importance sampling of ``target`` with ``num_particles`` particles in one
    batch, ``num_temperatures`` temperatures and one HMC transition of ``num_leapfrog`` steps
    (unit mass) at each. The step size starts at Hoffman & Gelman's heuristic at the first
    temperature and is nudged after each transition towards :data:`TARGET_ACCEPTANCE` (a
    function of the whole population, as adaptive SMC's kernels are)."""
    with pyro.validation_enabled(False):  # a particle at the edge of a support has density 0, not a ValueError
        return _anneal(target, space, num_particles, num_temperatures, num_leapfrog)


def _anneal(target: Target, space: FlatPotential, num_particles: int, num_temperatures: int,
            num_leapfrog: int) -> AnnealedParticles:
    priors = prior_distributions(target)
    tempered = TemperedPotential(space, priors)
    with torch.no_grad():
        x = space.flatten({site: prior.sample((num_particles,)) for site, prior in priors.items()})
    betas = temperatures(num_temperatures)
    log_weights = torch.zeros(num_particles, dtype=torch.float64)
    acceptance, step_size = [], None
    unit = torch.ones(space.dim, dtype=x.dtype)  # mass: the prior's scales are the zoo's, near 1
    for t in range(1, num_temperatures + 1):
        # One pass gives the weight's likelihood and the transition's start at the new temperature.
        tempered.beta = float(betas[t])
        potential, grad, likelihood = tempered.evaluate(x)
        # A non-finite likelihood (a prior draw where the model's density overflows) gives the
        # particle weight zero at once, rather than a NaN that would poison the estimate.
        log_weights = log_weights + torch.where(torch.isfinite(likelihood),
                                                (betas[t] - betas[t - 1]) * likelihood,
                                                torch.full_like(likelihood, -math.inf))
        state = Batch(x, potential, grad)
        if step_size is None:
            step_size = initial_step_size(tempered, state, unit)
        state, stats = hmc_transition(tempered, state, step_size, num_leapfrog, unit)
        x = state.x
        mean_acceptance = float(stats["acceptance_rate"].mean())
        acceptance.append(mean_acceptance)
        step_size *= math.exp(mean_acceptance - TARGET_ACCEPTANCE)
    return AnnealedParticles(x, log_weights, torch.tensor(acceptance, dtype=torch.float64), step_size)



@dataclass(frozen=True)
class SMCParticles:
    """The particles at β = 1 (S, d), flat and unconstrained, in ``num_islands`` islands of
    equal size (particle i in island i // (S / num_islands)), equally weighted within each;
    each island's log evidence estimate (num_islands,); the temperatures each island took."""

    x: torch.Tensor
    log_evidence: torch.Tensor
    num_temperatures: torch.Tensor


def _next_temperatures(likelihood: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Per island (``likelihood`` (M, n) of equally weighted particles), the largest next
    temperature in (β, 1] whose incremental weights keep a conditional ESS of at least
    :data:`TARGET_CESS`·n, by bisection (the ESS falls as the step grows)."""
    finite = torch.isfinite(likelihood)

    def log_cess(step: torch.Tensor) -> torch.Tensor:  # log (ESS / n) of weights exp(step ℓ)
        log_w = torch.where(finite, step[:, None] * likelihood, torch.full_like(likelihood, -math.inf))
        return 2 * log_w.logsumexp(-1) - (2 * log_w).logsumexp(-1) - math.log(likelihood.shape[-1])

    low, high = torch.zeros_like(beta), 1.0 - beta
    done = log_cess(high) >= math.log(TARGET_CESS)
    for _ in range(60):
        middle = 0.5 * (low + high)
        fine = log_cess(middle) >= math.log(TARGET_CESS)
        low, high = torch.where(fine, middle, low), torch.where(fine, high, middle)
    return torch.where(done, torch.ones_like(beta), beta + low.clamp_min(1e-12 * (1 - beta)))


def smc(target: Target, space: FlatPotential, num_particles: int, num_islands: int, num_moves: int,
        num_leapfrog: int) -> SMCParticles:
    """Tempered SMC of ``target``: ``num_particles`` in ``num_islands`` islands, adaptive
    temperatures (:func:`_next_temperatures`), systematic resampling within each island at
    every temperature, then ``num_moves`` HMC transitions of ``num_leapfrog`` steps (unit mass;
    the step size as in :func:`anneal`). An island that reached β = 1 goes on moving there
    (its moves leave the posterior invariant) while the others finish."""
    if num_particles % num_islands or num_particles // num_islands < 2:
        raise ValueError(f"SMC needs at least 2 particles per island in equal islands, got {num_particles} "
                         f"particles in {num_islands} islands")
    with pyro.validation_enabled(False):  # a particle at the edge of a support has density 0, not a ValueError
        return _smc(target, space, num_particles, num_islands, num_moves, num_leapfrog)


def _smc(target: Target, space: FlatPotential, num_particles: int, num_islands: int, num_moves: int,
         num_leapfrog: int) -> SMCParticles:
    priors = prior_distributions(target)
    tempered = TemperedPotential(space, priors)
    size = num_particles // num_islands
    with torch.no_grad():
        x = space.flatten({site: prior.sample((num_particles,)) for site, prior in priors.items()})
    unit = torch.ones(space.dim, dtype=x.dtype)
    beta = torch.zeros(num_islands, dtype=torch.float64)
    log_evidence = torch.zeros(num_islands, dtype=torch.float64)
    steps = torch.zeros(num_islands, dtype=torch.long)
    likelihood = tempered.log_likelihood(x).reshape(num_islands, size)
    step_size = None
    while bool((beta < 1).any()):
        if int(steps.max()) >= MAX_SMC_TEMPERATURES:
            raise FloatingPointError(f"SMC took {MAX_SMC_TEMPERATURES} temperatures and reached only "
                                     f"β = {float(beta.min()):.3g}")
        new_beta = torch.where(beta < 1, _next_temperatures(likelihood, beta), beta)
        step = (new_beta - beta)[:, None]
        moving = step > 0
        increment = torch.where(moving, torch.where(torch.isfinite(likelihood), step * likelihood,
                                                    torch.full_like(likelihood, -math.inf)), torch.zeros_like(likelihood))
        # The particles are equally weighted: the evidence gains the mean incremental weight.
        log_evidence = log_evidence + torch.where(moving[:, 0], increment.logsumexp(-1) - math.log(size), 0.0)
        steps, beta = steps + moving[:, 0], new_beta
        ancestors = torch.stack([island * size + systematic_resample(increment[island], size, torch.default_generator)
                                 for island in range(num_islands)]).reshape(-1)
        x = x[ancestors]
        tempered.beta = beta.repeat_interleave(size)
        state = Batch(x, *tempered.batch_potential_and_grad(x))
        if step_size is None:
            step_size = initial_step_size(tempered, state, unit)
        for _ in range(num_moves):
            state, stats = hmc_transition(tempered, state, step_size, num_leapfrog, unit)
            step_size *= math.exp(float(stats["acceptance_rate"].mean()) - TARGET_ACCEPTANCE)
        x = state.x
        # A pass of its own: the next temperature depends on it, and the potential at that
        # temperature is then needed at the resampled particles.
        likelihood = tempered.log_likelihood(x).reshape(num_islands, size)
    return SMCParticles(x, log_evidence, steps)
