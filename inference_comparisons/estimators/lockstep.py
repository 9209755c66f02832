"""What every sampler of many chains in lockstep shares: the chains' batched state, a
start with a finite density, one HMC transition, the initial step size, and the diagonal
mass matrix adapted across chains in Stan's doubling windows.

The state of C chains is a (C, d) tensor in Pyro's unconstrained space, and one call of
:meth:`~inference_comparisons.estimators.potential.FlatPotential.batch_potential_and_grad`
gives the potential and gradient of all of them: on these CPUs a small model's gradient is
overhead, not arithmetic, so C chains cost little more than one (``make bench``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from inference_comparisons.estimators.potential import FlatPotential

__all__ = ["MAX_ENERGY_ERROR", "Batch", "LockstepChains", "MassAdaptation", "begin_warmup", "harmonic_mean",
           "hmc_transition", "initial_step_size", "shrunk_variance", "start_chains", "warmup_windows"]

#: An energy error above this is a divergence (Stan's and Pyro's threshold).
MAX_ENERGY_ERROR = 1000.0


@dataclass
class Batch:
    """Where the chains are: positions (C, d), potentials (C,), gradients (C, d)."""

    x: torch.Tensor
    potential: torch.Tensor
    grad: torch.Tensor


@dataclass(frozen=True)
class LockstepChains:
    """Post-warm-up states of C chains, ``(num_draws, C, d)`` in the unconstrained space,
    their per-draw statistics (each ``(num_draws, C)``), the adapted step size and inverse
    mass, the number of divergent transitions, and the sampler's own figures (``info``)."""

    states: torch.Tensor
    stats: dict[str, torch.Tensor]
    step_size: float
    inverse_mass: torch.Tensor
    divergences: int
    info: dict[str, float] = field(default_factory=dict)


def start_chains(space: FlatPotential, start: torch.Tensor) -> Batch:
    """The chains' first state; a start whose density is not finite is redrawn uniformly
    in (-2, 2) (Pyro's ``init_to_uniform``), up to 100 times."""
    x = start.clone()
    for _ in range(100):
        potential, grad = space.batch_potential_and_grad(x)
        bad = ~(torch.isfinite(potential) & torch.isfinite(grad).all(-1))
        if not bool(bad.any()):
            return Batch(x, potential, grad)
        x[bad] = 4 * torch.rand(int(bad.sum()), x.shape[1], dtype=x.dtype) - 2
    raise FloatingPointError(f"{int(bad.sum())} of {len(x)} chains found no start with a finite density "
                             f"in 100 draws")


def hmc_transition(space: FlatPotential, state: Batch, step_size: float, num_steps: int,
                   inverse_mass: torch.Tensor) -> tuple[Batch, dict[str, torch.Tensor]]:
    """One HMC transition of every chain: a fresh momentum, ``num_steps`` leapfrog steps, a
    Metropolis correction. Returns the new state and per-chain statistics, with the proposal
    (its position and final momentum) that ChEES's adaptation reads. A divergence (an
    energy error above :data:`MAX_ENERGY_ERROR`, or a non-finite one) is rejected."""
    momentum = torch.randn_like(state.x) / inverse_mass.sqrt()
    energy = state.potential + 0.5 * (inverse_mass * momentum ** 2).sum(-1)
    x, grad = state.x, state.grad
    p = momentum - 0.5 * step_size * grad
    for step in range(num_steps):
        x = x + step_size * inverse_mass * p
        potential, grad = space.batch_potential_and_grad(x)
        p = p - (step_size if step < num_steps - 1 else 0.5 * step_size) * grad
    proposed_energy = potential + 0.5 * (inverse_mass * p ** 2).sum(-1)
    error = proposed_energy - energy
    divergent = ~(error < MAX_ENERGY_ERROR)  # catches NaN too
    acceptance = torch.where(divergent, torch.zeros_like(error), (-error).clamp(max=0).exp())
    accept = torch.rand_like(acceptance) < acceptance
    keep = accept.unsqueeze(-1)
    new = Batch(torch.where(keep, x, state.x), torch.where(accept, potential, state.potential),
                torch.where(keep, grad, state.grad))
    stats = {"acceptance_rate": acceptance, "diverging": divergent, "energy": energy, "lp": -new.potential,
             "proposal": x, "proposal_momentum": p}
    return new, stats


def harmonic_mean(acceptance: torch.Tensor, divergent: torch.Tensor) -> float:
    """Harmonic mean of the non-divergent chains' acceptance probabilities (0 if any is 0)."""
    kept = acceptance[~divergent]
    if len(kept) == 0 or bool((kept <= 0).any()):
        return 0.0
    return float(1.0 / (1.0 / kept).mean())


def initial_step_size(space: FlatPotential, state: Batch, inverse_mass: torch.Tensor) -> float:
    """Halve or double a step size from 1 until one leapfrog step's harmonic-mean acceptance
    across chains crosses 0.5 (Hoffman & Gelman 2014's heuristic, over all chains at once)."""
    def acceptance(step_size: float) -> float:
        _, stats = hmc_transition(space, state, step_size, 1, inverse_mass)
        return harmonic_mean(stats["acceptance_rate"], stats["diverging"])

    step_size = 1.0
    direction = 1 if acceptance(step_size) > 0.5 else -1
    for _ in range(60):  # 2^60: beyond any scale a float64 target has
        candidate = step_size * 2.0 ** direction
        if (acceptance(candidate) > 0.5) != (direction == 1):
            break
        step_size = candidate
    return step_size


def begin_warmup(space: FlatPotential, start: torch.Tensor, num_warmup: int
                 ) -> tuple[Batch, MassAdaptation, float]:
    """The chains' first state, the mass adaptation of ``num_warmup`` iterations (unit mass
    until its first window ends) and the initial step size: how every lockstep warm-up
    starts."""
    state = start_chains(space, start)
    mass = MassAdaptation(num_warmup, space.dim, start.dtype)
    return state, mass, initial_step_size(space, state, mass.inverse_mass)


def warmup_windows(num_warmup: int) -> list[int]:
    """Iterations (from 1) at whose end the mass matrix is re-estimated: Stan's schedule
    (75 initial iterations, windows doubling from 25, 50 final ones, the last window
    absorbing the remainder: ends at 100, 150, 250, 450 and 950 of 1000) scaled to
    ``num_warmup``; none below 20 iterations."""
    if num_warmup < 20:
        return []
    start, end = int(0.075 * num_warmup), num_warmup - int(0.05 * num_warmup)
    size, ends = max(1, int(0.025 * num_warmup)), []
    while start + size < end:
        if start + 3 * size > end:  # the next window would be too short: this one takes the rest
            size = end - start
        start += size
        ends.append(start)
        size *= 2
    return ends


class MassAdaptation:
    """A diagonal inverse mass matrix adapted during warm-up: the variance across chains and
    iterations of each window's states (:func:`warmup_windows`), shrunk towards 1e-3 as
    Stan does."""

    def __init__(self, num_warmup: int, dim: int, dtype: torch.dtype) -> None:
        self.inverse_mass = torch.ones(dim, dtype=dtype)
        self._ends, self._first = set(warmup_windows(num_warmup)), int(0.075 * num_warmup)
        self._window: list[torch.Tensor] = []

    def update(self, iteration: int, x: torch.Tensor) -> bool:
        """Record the chains' states ``x`` (C, d) after warm-up iteration ``iteration`` (from
        1); whether a window ended and the mass matrix changed (the step size's dual
        averaging restarts then, as in Stan)."""
        if iteration > self._first:
            self._window.append(x)
        if iteration not in self._ends:
            return False
        self.inverse_mass = shrunk_variance(torch.stack(self._window))
        self._window = []
        return True


def shrunk_variance(states: torch.Tensor) -> torch.Tensor:
    """Each coordinate's variance over states ``(..., d)`` (a window's ``(iterations, C, d)``,
    across chains and iterations; or a population of particles), finite states only, shrunk
    towards 1e-3 as Stan does: a diagonal inverse mass."""
    flat = states.reshape(-1, states.shape[-1])
    flat = flat[torch.isfinite(flat).all(-1)]
    n = len(flat)
    if n < 2:
        return torch.ones(states.shape[-1], dtype=states.dtype)
    return (n / (n + 5.0)) * flat.var(0) + 1e-3 * (5.0 / (n + 5.0))
