"""Data-augmentation Gibbs with HMC for the globals (HMC-within-Gibbs, as NumPyro's
``HMCGibbs``), many chains in lockstep.

Each iteration, for every chain at once:

1. the discrete locals are drawn exactly given the chain's globals,
   z ~ p(z | theta, x) (the target's ``draw_locals``: categorical draws from the
   responsibilities, or forward filtering, backward sampling);
2. the globals move by one HMC transition (:func:`~.lockstep.hmc_transition`) on
   p(theta | z, x), in the unconstrained space: the prior, the Jacobian and the
   complete-data log likelihood log p(x, z | theta).

Both steps leave the joint p(theta, z | x) invariant, so theta's chain has the collapsed
posterior p(theta | x). Warm-up adapts the step size by dual averaging towards
:data:`TARGET_ACCEPTANCE` and a diagonal mass on Stan's windows (:class:`~.lockstep.MassAdaptation`),
as the other lockstep samplers do; the trajectory has :data:`NUM_LEAPFROG` steps.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro.ops.dual_averaging import DualAveraging

from zoo.augmentation import DataAugmentation

from inference_comparisons.estimators.lockstep import (Batch, LockstepChains, MassAdaptation, harmonic_mean,
                                                       hmc_transition, initial_step_size, start_chains)
from inference_comparisons.estimators.potential import FlatPotential, log_prior_at

__all__ = ["ConditionalPotential", "run_gibbs"]

#: Leapfrog steps of each HMC transition of the globals.
NUM_LEAPFROG = 8
#: The HMC transitions' acceptance that warm-up aims at.
TARGET_ACCEPTANCE = 0.8


class ConditionalPotential:
    """-log p(theta, z | x) - log|J| at a batch of flat unconstrained globals (C, d), given
    each chain's current locals ``locals_`` (C, N): the space the HMC step moves in. Density
    and gradient evaluations are counted on ``space``'s counter."""

    def __init__(self, space: FlatPotential, locals_: torch.Tensor) -> None:
        if not isinstance(space.problem, DataAugmentation):
            raise TypeError(f"{type(space.problem).__name__} has no discrete locals to draw (zoo.augmentation)")
        self.space, self.problem, self.locals = space, space.problem, locals_
        self.priors = {site: space.problem.priors[site] for site in space.shapes}

    def batch_potential_and_grad(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            point = flat.detach().requires_grad_(True)
            values, log_prior, log_det = log_prior_at(self.space, self.priors, point)
            potential = -(log_prior + log_det + self.problem.complete_log_likelihood(values, self.locals))
            (grad,) = torch.autograd.grad(potential.sum(), point)
        self.space.counted.density_evals += len(flat)
        self.space.counted.grad_evals += len(flat)
        return potential.detach(), grad

    def redraw_locals(self, state: Batch) -> Batch:
        """Draw each chain's locals given its globals; the state's potential and gradient
        under the new locals (one evaluation per chain)."""
        with torch.no_grad():
            self.locals = self.problem.draw_locals(self.space.constrained(state.x)[0])
        return Batch(state.x, *self.batch_potential_and_grad(state.x))


def run_gibbs(space: FlatPotential, start: torch.Tensor, num_warmup: int, num_draws: int) -> LockstepChains:
    """Gibbs from ``start`` (C, d): ``num_warmup`` adapting iterations, then ``num_draws``
    with the step size and mass fixed (module docstring)."""
    with pyro.validation_enabled(False):  # an invalid state is a non-finite energy: a divergence
        with torch.no_grad():
            first = space.problem.draw_locals(space.constrained(start)[0])
        conditional = ConditionalPotential(space, first)
        state = start_chains(conditional, start)
        mass = MassAdaptation(num_warmup, space.dim, start.dtype)
        step_size = initial_step_size(conditional, state, mass.inverse_mass)
        dual = DualAveraging(prox_center=math.log(10 * step_size))
        for t in range(1, num_warmup + 1):
            state, stats = hmc_transition(conditional, conditional.redraw_locals(state), step_size, NUM_LEAPFROG,
                                          mass.inverse_mass)
            dual.step(TARGET_ACCEPTANCE - harmonic_mean(stats["acceptance_rate"], stats["diverging"]))
            log_step, averaged = dual.get_state()
            step_size = math.exp(log_step) if math.isfinite(log_step) else step_size
            if mass.update(t, state.x):
                dual = DualAveraging(prox_center=math.log(10 * step_size))  # Stan restarts it too
        step_size = math.exp(averaged) if num_warmup and math.isfinite(averaged) else step_size
        states, records = [], {"acceptance_rate": [], "diverging": [], "energy": [], "lp": []}
        for _ in range(num_draws):
            state, stats = hmc_transition(conditional, conditional.redraw_locals(state), step_size, NUM_LEAPFROG,
                                          mass.inverse_mass)
            states.append(state.x)
            for name in records:
                records[name].append(stats[name])
    stacked = {name: torch.stack(values) for name, values in records.items()}
    stacked["step_size"] = torch.full_like(stacked["energy"], step_size)
    stacked["n_steps"] = torch.full_like(stacked["energy"], NUM_LEAPFROG, dtype=torch.int64)
    return LockstepChains(torch.stack(states), stacked, step_size, mass.inverse_mass,
                          int(stacked["diverging"].sum()), {"step_size": step_size})
