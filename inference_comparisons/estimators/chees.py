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
from dataclasses import dataclass

import pyro
import torch
from pyro.ops.dual_averaging import DualAveraging

from inference_comparisons.estimators.lockstep import (Batch, LockstepChains, begin_warmup, harmonic_mean,
                                                       hmc_transition, start_chains)
from inference_comparisons.estimators.potential import FlatPotential

__all__ = ["ChEESKernel", "ChEESSettings", "chees_warmup", "run_chees", "run_fixed_kernel", "van_der_corput"]

#: Beskos, Pillai, Roberts, Sanz-Serna & Stuart (2013): the acceptance rate that optimises
#: HMC's efficiency in high dimension; ChEES adapts its harmonic mean over chains to it.
TARGET_ACCEPTANCE = 0.651

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


def van_der_corput(index: int) -> float:
    """The ``index``-th point (from 1) of the base-2 van der Corput sequence in (0, 1): an
    even, quasi-random cover of (0, 1), so T's jitter has less variance than uniform draws."""
    value, scale = 0.0, 0.5
    while index:
        value += scale * (index & 1)
        index >>= 1
        scale /= 2
    return value


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


@dataclass(frozen=True)
class ChEESKernel:
    """What ChEES's warm-up adapts, fixed afterwards: the step size, the trajectory length
    (jittered per iteration) and the diagonal inverse mass."""

    step_size: float
    trajectory_length: float
    inverse_mass: torch.Tensor


def chees_warmup(space: FlatPotential, start: torch.Tensor, num_warmup: int,
                 settings: ChEESSettings = ChEESSettings()) -> tuple[Batch, ChEESKernel]:
    """``num_warmup`` adapting iterations from ``start`` (C, d): the chains' state after
    them and the adapted kernel (module docstring)."""
    if start.dim() != 2 or start.shape[0] < 2:
        raise ValueError(f"ChEES needs at least 2 chains of flat points, got start of shape {tuple(start.shape)}")
    with pyro.validation_enabled(False):  # an invalid state is a non-finite energy: a divergence
        state, mass, step_size = begin_warmup(space, start, num_warmup)
        log_length = math.log(step_size)
        dual, adam = DualAveraging(prox_center=math.log(10 * step_size)), _Adam(settings)
        averages = {"log_step_size": math.log(step_size), "log_length": log_length}
        for t in range(1, num_warmup + 1):
            jitter = van_der_corput(t)
            num_steps = _num_steps(jitter, math.exp(log_length), step_size, settings.max_leapfrog_steps)
            initial = state.x
            state, stats = hmc_transition(space, state, step_size, num_steps, mass.inverse_mass)
            dual.step(settings.target_acceptance - harmonic_mean(stats["acceptance_rate"], stats["diverging"]))
            log_step, _ = dual.get_state()
            step_size = math.exp(log_step) if math.isfinite(log_step) else step_size
            gradient = _chees_gradient(initial, stats, mass.inverse_mass, jitter * math.exp(log_length))
            log_length += adam.step(gradient) if math.isfinite(gradient) else 0.0
            log_length = min(max(log_length, math.log(step_size)),
                             math.log(settings.max_leapfrog_steps * step_size))
            weight = t ** -0.5
            averages = {"log_step_size": (1 - weight) * averages["log_step_size"] + weight * math.log(step_size),
                        "log_length": (1 - weight) * averages["log_length"] + weight * log_length}
            if mass.update(t, state.x):
                dual = DualAveraging(prox_center=math.log(10 * step_size))  # Stan restarts it too
    return state, ChEESKernel(math.exp(averages["log_step_size"]), math.exp(averages["log_length"]),
                              mass.inverse_mass)


def run_chees(space: FlatPotential, start: torch.Tensor, num_warmup: int, num_draws: int,
              settings: ChEESSettings = ChEESSettings()) -> LockstepChains:
    """ChEES-HMC from ``start`` (C, d): ``num_warmup`` adapting iterations, then
    ``num_draws`` with the adapted kernel fixed (module docstring)."""
    state, kernel = chees_warmup(space, start, num_warmup, settings)
    with pyro.validation_enabled(False):
        return _sample(space, state, num_draws, kernel, settings.max_leapfrog_steps)


def run_fixed_kernel(space: FlatPotential, start: torch.Tensor, num_draws: int, kernel: ChEESKernel,
                     max_leapfrog_steps: int = ChEESSettings.max_leapfrog_steps) -> LockstepChains:
    """``num_draws`` iterations of jittered HMC with a fixed step size, trajectory length
    and diagonal inverse mass, from ``start`` (C, d): a kernel that leaves the target
    invariant, as ChEES runs after warm-up."""
    with pyro.validation_enabled(False):
        return _sample(space, start_chains(space, start), num_draws, kernel, max_leapfrog_steps)


def _num_steps(jitter: float, length: float, step_size: float, max_leapfrog_steps: int) -> int:
    """Leapfrog steps of a jittered trajectory: ceil(u T / step size), at least one."""
    return min(max_leapfrog_steps, max(1, math.ceil(jitter * length / step_size)))


def _sample(space: FlatPotential, state: Batch, num_draws: int, kernel: ChEESKernel,
            max_leapfrog_steps: int) -> LockstepChains:
    """``num_draws`` iterations of the fixed, jittered kernel, recording every state."""
    step_size, length, inverse_mass = kernel.step_size, kernel.trajectory_length, kernel.inverse_mass
    states, records = [], {"acceptance_rate": [], "diverging": [], "energy": [], "lp": [], "n_steps": []}
    for t in range(1, num_draws + 1):
        num_steps = _num_steps(van_der_corput(t), length, step_size, max_leapfrog_steps)
        state, stats = hmc_transition(space, state, step_size, num_steps, inverse_mass)
        states.append(state.x)
        for name in ("acceptance_rate", "diverging", "energy", "lp"):
            records[name].append(stats[name])
        records["n_steps"].append(torch.full((len(state.x),), num_steps, dtype=torch.int64))
    stacked = {name: torch.stack(values) for name, values in records.items()}
    stacked["step_size"] = torch.full_like(stacked["energy"], step_size)
    return LockstepChains(torch.stack(states), stacked, step_size, inverse_mass, int(stacked["diverging"].sum()),
                          {"step_size": step_size, "trajectory_length": length,
                           "mean_leapfrog_steps": float(stacked["n_steps"].double().mean())})
