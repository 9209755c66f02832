"""Several Pyro HMC/NUTS chains on a target's fast potential, one after another, every
density and gradient evaluation counted, and the kernels they run.

Shared by the ``nuts`` and ``hmc`` methods and by the amortised reference's NUTS
cross-check. Chains run in this process: on 2 cores Pyro's multiprocess chains only add
start-up cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pyro
import torch
from pyro.infer import MCMC
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.ops.stats import split_gelman_rubin

from zoo.base import Draws, Target

from inference_comparisons.estimators.potential import CountingPotential, fast_potential, unconstraining_transforms
from inference_comparisons.estimators.sampler_stats import (RecordingHMC, RecordingNUTS, concatenate_sample_stats,
                                                            effective_sample_size)

__all__ = ["HMC_TRAJECTORY_LENGTH", "Chains", "convergence", "hmc_kernel", "nuts_kernel", "run_chains"]

#: Static HMC's trajectory length in units of the adapted mass: a common default that
#: neither NUTS's adaptivity nor a per-model tuning gives it.
HMC_TRAJECTORY_LENGTH = torch.pi / 2


def nuts_kernel(potential: CountingPotential, full_mass: bool = False) -> RecordingNUTS:
    """NUTS adapting its step size and a diagonal (or, with ``full_mass``, dense) mass
    matrix in warm-up, recording per-draw statistics."""
    return RecordingNUTS(potential_fn=potential, adapt_step_size=True, adapt_mass_matrix=True, full_mass=full_mass)


def hmc_kernel(potential: CountingPotential, full_mass: bool = False) -> RecordingHMC:
    """Static HMC with trajectory length :data:`HMC_TRAJECTORY_LENGTH`, adapted like :func:`nuts_kernel`."""
    return RecordingHMC(potential_fn=potential, trajectory_length=HMC_TRAJECTORY_LENGTH, adapt_step_size=True,
                        adapt_mass_matrix=True, full_mass=full_mass)


@dataclass(frozen=True)
class Chains:
    """Post-warm-up draws of each chain (constrained, chains concatenated in order), their
    per-draw sampler statistics, divergences, and the counted evaluations of every chain
    (warm-up included)."""

    draws: Draws
    num_chains: int
    divergences: int
    sample_stats: dict[str, torch.Tensor]
    density_evals: int
    grad_evals: int


def run_chains(target: Target, kernel: Callable[[CountingPotential], MCMCKernel], num_chains: int, num_draws: int,
               num_warmup: int, init: Callable[[int], dict[str, torch.Tensor]] | None = None) -> Chains:
    """``num_chains`` chains of ``num_warmup`` + ``num_draws`` iterations of ``kernel``
    (built on the counted potential), each from a fresh ``init_to_uniform`` point or from
    ``init(chain)`` in Pyro's unconstrained coordinates."""
    chains: list[Draws] = []
    stats: list[dict[str, torch.Tensor]] = []
    divergences = 0
    potential = None
    for chain in range(num_chains):
        start, constrain = unconstraining_transforms(target)
        if init is not None:
            start = init(chain)
        if potential is None:
            potential = CountingPotential(fast_potential(target, constrain))
        sampler = kernel(potential)
        mcmc = MCMC(sampler, num_samples=num_draws, warmup_steps=num_warmup, initial_params=start,
                    disable_progbar=True)
        # Pyro turns argument validation off in warm-up only. Off for the draws too, a
        # trajectory that wanders to an invalid parameter (a GMM scale of inf or NaN under a
        # too-large fixed step) gives a non-finite energy, which Pyro counts as a divergence,
        # as Stan does, instead of a ValueError that loses the whole run.
        with pyro.validation_enabled(False):
            mcmc.run()
        stats.append(sampler.sample_stats() if hasattr(sampler, "sample_stats") else {})
        samples = mcmc.get_samples()
        chains.append({s: constrain[s](samples[s]).detach() for s in target.continuous_sites})
        divergences += sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    assert potential is not None
    draws = {s: torch.cat([c[s] for c in chains]) for s in target.continuous_sites}
    return Chains(draws, num_chains, divergences, concatenate_sample_stats(stats), potential.density_evals,
                  potential.grad_evals)


def convergence(values: torch.Tensor, num_chains: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chained draws ``(C N, ...)`` of one quantity as ``(C, N, ...)`` float64, with the
    effective sample size and the split R-hat of each coordinate."""
    grouped = values.reshape(num_chains, -1, *values.shape[1:]).to(torch.float64)
    return grouped, effective_sample_size(grouped), split_gelman_rubin(grouped, chain_dim=0, sample_dim=1)
