"""ChEES-HMC: many HMC chains in lockstep, as one batch of tensors.

The state of C chains is a (C, d) tensor in Pyro's unconstrained space; each leapfrog step
evaluates the target's plain-torch density and its gradient for all C chains in one call
(:meth:`~inference_comparisons.estimators.potential.FlatPotential.batch_potential_and_grad`),
which costs little more than one chain: on these CPUs a small model's gradient is overhead,
not arithmetic (``make bench``). Every chain takes the same number of leapfrog steps, so
nothing waits on a slower chain.

Warm-up adapts, from statistics across the chains (Hoffman, Radul & Sountsov 2021,
"An adaptive-MCMC scheme for setting trajectory lengths in Hamiltonian Monte Carlo",
AISTATS):

- the step size, by dual averaging (Pyro's ``DualAveraging``) of the harmonic mean of the
  chains' acceptance probabilities towards 0.651 (Beskos et al. 2013's optimum for HMC);
- one trajectory length T shared by all chains, jittered each iteration to u T with u from
  a base-2 van der Corput (Halton) sequence, by Adam on the log of T, ascending the
  gradient of the ChEES criterion E[(|x' - E x'|^2 - |x - E x|^2)^2] / 4 estimated across
  chains, each chain weighted by its acceptance probability;
- a diagonal inverse mass matrix: the variance across chains and iterations in windows
  that double in length (Stan's schedule), regularised towards 1e-3 as Stan does.

Both the step size and T used after warm-up are moving averages of their log over warm-up
(weights t^-1/2), as in the paper and TFP. After warm-up they are fixed: a plain
(jittered) HMC kernel, which leaves the target invariant.

Divergences (an energy error above 1000, or a non-finite one) are rejected and counted, and
they and non-finite states are left out of the adaptation's statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import torch
from pyro.ops.dual_averaging import DualAveraging

from inference_comparisons.estimators.potential import FlatPotential

__all__ = ["ChEESSettings", "LockstepChains", "run_chees", "run_fixed_kernel", "van_der_corput", "warmup_windows"]

#: Beskos, Pillai, Roberts, Sanz-Serna & Stuart (2013): the acceptance rate that optimises
#: HMC's efficiency in high dimension; ChEES adapts its harmonic mean over chains to it.
TARGET_ACCEPTANCE = 0.651
#: An energy error above this is a divergence (Stan's and Pyro's threshold).
MAX_ENERGY_ERROR = 1000.0


@dataclass(frozen=True)
class ChEESSettings:
    """The tuning of the tuning. Defaults follow the paper and TFP: Adam at step 0.025 on
    log T with each update clipped to ±0.35 (about log 2 / 2), at most 1000 leapfrog steps
    per trajectory."""

    target_acceptance: float = TARGET_ACCEPTANCE
    learning_rate: float = 0.025
    max_log_update: float = 0.35
    max_leapfrog_steps: int = 1000
    #: Adam's decay rates of its first and second moments.
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class LockstepChains:
    """Post-warm-up states of C chains, ``(num_draws, C, d)`` in the unconstrained space,
    their per-draw statistics (each ``(num_draws, C)``), and the adapted kernel."""

    states: torch.Tensor
    stats: dict[str, torch.Tensor]
    step_size: float
    trajectory_length: float
    inverse_mass: torch.Tensor
    divergences: int
    info: dict[str, float] = field(default_factory=dict)


def van_der_corput(index: int) -> float:
    """The ``index``-th point (from 1) of the base-2 van der Corput sequence in (0, 1): an
    even, quasi-random cover of (0, 1), so T's jitter has less variance than uniform draws."""
    value, scale = 0.0, 0.5
    while index:
        value += scale * (index & 1)
        index >>= 1
        scale /= 2
    return value


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


class _Adam:
    """Adam (Kingma & Ba 2015) on one scalar, maximising: ``step(gradient)`` returns the
    (clipped) increment to add."""

    def __init__(self, settings: ChEESSettings) -> None:
        self.settings, self.m, self.v, self.t = settings, 0.0, 0.0, 0

    def step(self, gradient: float) -> float:
        beta1, beta2 = self.settings.betas
        self.t += 1
        self.m = beta1 * self.m + (1 - beta1) * gradient
        self.v = beta2 * self.v + (1 - beta2) * gradient ** 2
        m_hat, v_hat = self.m / (1 - beta1 ** self.t), self.v / (1 - beta2 ** self.t)
        update = self.settings.learning_rate * m_hat / (math.sqrt(v_hat) + 1e-8)
        return max(-self.settings.max_log_update, min(self.settings.max_log_update, update))


@dataclass
class _Batch:
    """Where the chains are: positions (C, d), potentials (C,), gradients (C, d)."""

    x: torch.Tensor
    potential: torch.Tensor
    grad: torch.Tensor


def _transition(space: FlatPotential, state: _Batch, step_size: float, num_steps: int,
                inverse_mass: torch.Tensor) -> tuple[_Batch, dict[str, torch.Tensor]]:
    """One HMC transition of every chain: a fresh momentum, ``num_steps`` leapfrog steps, a
    Metropolis correction. Returns the new state and per-chain statistics, with the proposal
    (its position and final momentum) that the adaptation reads."""
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
    new = _Batch(torch.where(keep, x, state.x), torch.where(accept, potential, state.potential),
                 torch.where(keep, grad, state.grad))
    stats = {"acceptance_rate": acceptance, "diverging": divergent, "energy": energy, "lp": -new.potential,
             "proposal": x, "proposal_momentum": p}
    return new, stats


def _chees_gradient(initial: torch.Tensor, stats: dict[str, torch.Tensor], inverse_mass: torch.Tensor,
                    jittered_length: float) -> float:
    """d ChEES / d log T, estimated across chains in the mass matrix's whitened coordinates
    (each chain weighted by its acceptance probability; divergent or non-finite ones left
    out): (|z' - mean z'|^2 - |z - mean z|^2) (z' - mean z') . dz'/dt, times the jittered
    length t = d t / d log T."""
    weight = stats["acceptance_rate"] * ~stats["diverging"]
    finite = torch.isfinite(stats["proposal"]).all(-1) & torch.isfinite(stats["proposal_momentum"]).all(-1)
    weight = torch.where(finite, weight, torch.zeros_like(weight))
    if float(weight.sum()) <= 0:
        return 0.0
    scale = inverse_mass.sqrt()
    proposal = torch.where(finite.unsqueeze(-1), stats["proposal"], torch.zeros_like(stats["proposal"])) / scale
    start = initial / scale
    proposal_centred = proposal - (weight.unsqueeze(-1) * proposal).sum(0) / weight.sum()
    start_centred = start - start.mean(0)
    velocity = torch.where(finite.unsqueeze(-1), stats["proposal_momentum"], torch.zeros_like(proposal)) * scale
    per_chain = ((proposal_centred ** 2).sum(-1) - (start_centred ** 2).sum(-1)) * (proposal_centred * velocity).sum(-1)
    return float((weight * per_chain).sum() / weight.sum()) * jittered_length


def _harmonic_mean(acceptance: torch.Tensor, divergent: torch.Tensor) -> float:
    """Harmonic mean of the non-divergent chains' acceptance probabilities (0 if any is 0)."""
    kept = acceptance[~divergent]
    if len(kept) == 0 or bool((kept <= 0).any()):
        return 0.0
    return float(1.0 / (1.0 / kept).mean())


def _initial_step_size(space: FlatPotential, state: _Batch, inverse_mass: torch.Tensor) -> float:
    """Halve or double a step size from 1 until one leapfrog step's harmonic-mean acceptance
    across chains crosses 0.5 (Hoffman & Gelman 2014's heuristic, over all chains at once)."""
    def acceptance(step_size: float) -> float:
        _, stats = _transition(space, state, step_size, 1, inverse_mass)
        return _harmonic_mean(stats["acceptance_rate"], stats["diverging"])

    step_size = 1.0
    direction = 1 if acceptance(step_size) > 0.5 else -1
    for _ in range(60):  # 2^60: beyond any scale a float64 target has
        candidate = step_size * 2.0 ** direction
        if (acceptance(candidate) > 0.5) != (direction == 1):
            break
        step_size = candidate
    return step_size


def _start(space: FlatPotential, start: torch.Tensor) -> _Batch:
    """The chains' first state; a start whose density is not finite is redrawn uniformly
    in (-2, 2) (Pyro's ``init_to_uniform``), up to 100 times."""
    x = start.clone()
    for _ in range(100):
        potential, grad = space.batch_potential_and_grad(x)
        bad = ~(torch.isfinite(potential) & torch.isfinite(grad).all(-1))
        if not bool(bad.any()):
            return _Batch(x, potential, grad)
        x[bad] = 4 * torch.rand(int(bad.sum()), x.shape[1], dtype=x.dtype) - 2
    raise FloatingPointError(f"{int(bad.sum())} of {len(x)} chains found no start with a finite density "
                             f"in 100 draws")


def run_chees(space: FlatPotential, start: torch.Tensor, num_warmup: int, num_draws: int,
              settings: ChEESSettings = ChEESSettings()) -> LockstepChains:
    """ChEES-HMC from ``start`` (C, d): ``num_warmup`` adapting iterations, then
    ``num_draws`` with the adapted kernel fixed (module docstring)."""
    if start.dim() != 2 or start.shape[0] < 2:
        raise ValueError(f"ChEES needs at least 2 chains of flat points, got start of shape {tuple(start.shape)}")
    with pyro.validation_enabled(False):  # an invalid state is a non-finite energy: a divergence
        state = _start(space, start)
        inverse_mass = torch.ones(space.dim, dtype=start.dtype)
        step_size = _initial_step_size(space, state, inverse_mass)
        log_length = math.log(step_size)
        dual, adam = DualAveraging(prox_center=math.log(10 * step_size)), _Adam(settings)
        averages = {"log_step_size": math.log(step_size), "log_length": log_length}
        windows, window_states = set(warmup_windows(num_warmup)), []
        first_window_start = int(0.075 * num_warmup)
        for t in range(1, num_warmup + 1):
            jitter = van_der_corput(t)
            num_steps = _num_steps(jitter, math.exp(log_length), step_size, settings.max_leapfrog_steps)
            initial = state.x
            state, stats = _transition(space, state, step_size, num_steps, inverse_mass)
            dual.step(settings.target_acceptance - _harmonic_mean(stats["acceptance_rate"], stats["diverging"]))
            log_step, _ = dual.get_state()
            step_size = math.exp(log_step) if math.isfinite(log_step) else step_size
            gradient = _chees_gradient(initial, stats, inverse_mass, jitter * math.exp(log_length))
            log_length += adam.step(gradient) if math.isfinite(gradient) else 0.0
            log_length = min(max(log_length, math.log(step_size)),
                             math.log(settings.max_leapfrog_steps * step_size))
            weight = t ** -0.5
            averages = {"log_step_size": (1 - weight) * averages["log_step_size"] + weight * math.log(step_size),
                        "log_length": (1 - weight) * averages["log_length"] + weight * log_length}
            if t > first_window_start:
                window_states.append(state.x)
            if t in windows:
                inverse_mass = _window_variance(torch.stack(window_states))
                window_states = []
                dual = DualAveraging(prox_center=math.log(10 * step_size))  # Stan restarts it too
        return _sample(space, state, num_draws, math.exp(averages["log_step_size"]),
                       math.exp(averages["log_length"]), inverse_mass, settings.max_leapfrog_steps)


def run_fixed_kernel(space: FlatPotential, start: torch.Tensor, num_draws: int, step_size: float,
                     trajectory_length: float, inverse_mass: torch.Tensor,
                     max_leapfrog_steps: int = ChEESSettings.max_leapfrog_steps) -> LockstepChains:
    """``num_draws`` iterations of jittered HMC with a fixed step size, trajectory length
    and diagonal inverse mass, from ``start`` (C, d): a kernel that leaves the target
    invariant, as ChEES runs after warm-up."""
    with pyro.validation_enabled(False):
        return _sample(space, _start(space, start), num_draws, step_size, trajectory_length, inverse_mass,
                       max_leapfrog_steps)


def _window_variance(states: torch.Tensor) -> torch.Tensor:
    """Each coordinate's variance over a window's states ``(iterations, C, d)``, across
    chains and iterations (finite states only), shrunk towards 1e-3 as Stan does."""
    flat = states.reshape(-1, states.shape[-1])
    flat = flat[torch.isfinite(flat).all(-1)]
    n = len(flat)
    if n < 2:
        return torch.ones(states.shape[-1], dtype=states.dtype)
    return (n / (n + 5.0)) * flat.var(0) + 1e-3 * (5.0 / (n + 5.0))


def _num_steps(jitter: float, length: float, step_size: float, max_leapfrog_steps: int) -> int:
    """Leapfrog steps of a jittered trajectory: ceil(u T / step size), at least one."""
    return min(max_leapfrog_steps, max(1, math.ceil(jitter * length / step_size)))


def _sample(space: FlatPotential, state: _Batch, num_draws: int, step_size: float, length: float,
            inverse_mass: torch.Tensor, max_leapfrog_steps: int) -> LockstepChains:
    """``num_draws`` iterations of the fixed, jittered kernel, recording every state."""
    states, records = [], {"acceptance_rate": [], "diverging": [], "energy": [], "lp": [], "n_steps": []}
    for t in range(1, num_draws + 1):
        num_steps = _num_steps(van_der_corput(t), length, step_size, max_leapfrog_steps)
        state, stats = _transition(space, state, step_size, num_steps, inverse_mass)
        states.append(state.x)
        for name in ("acceptance_rate", "diverging", "energy", "lp"):
            records[name].append(stats[name])
        records["n_steps"].append(torch.full((len(state.x),), num_steps, dtype=torch.int64))
    stacked = {name: torch.stack(values) for name, values in records.items()}
    stacked["step_size"] = torch.full_like(stacked["energy"], step_size)
    return LockstepChains(torch.stack(states), stacked, step_size, length, inverse_mass,
                          int(stacked["diverging"].sum()),
                          {"step_size": step_size, "trajectory_length": length,
                           "mean_leapfrog_steps": float(stacked["n_steps"].double().mean())})
