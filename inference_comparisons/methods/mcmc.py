"""Hamiltonian Monte Carlo and NUTS (Pyro), with every gradient evaluation counted.

MCMC runs on the target's collapsed density: the same density as the enumerated model (the
conformance tests check it) without the enumeration machinery in the inner loop. The
potential is the plain-torch ``target.log_density`` in Pyro's unconstrained coordinates
(:mod:`~inference_comparisons.estimators.potential`), and the chains run one after another
(:mod:`~inference_comparisons.estimators.hmc`).
"""

from __future__ import annotations

import abc
from typing import Callable

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from zoo.base import Target

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.hmc import convergence, hmc_kernel, nuts_kernel, run_chains
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.potential import CountingPotential

__all__ = ["HMC", "NUTS", "hamiltonian_not_applicable"]


def hamiltonian_not_applicable(target: Target) -> str | None:
    """Why Hamiltonian dynamics cannot move ``target``'s latents, or ``None``."""
    if not target.continuous_sites:
        return "every latent of this target is discrete; HMC needs continuous latents"
    if target.discrete_sites:
        return "this target infers discrete latents, which HMC cannot move"
    return None


class _HamiltonianMethod(InferenceMethod):
    budget_unit = "draws"
    ladders = {"quick": (30, 100), "default": (50, 150, 500), "thorough": (300, 1000, 3000)}
    #: 5 warm-up and 5 kept draws per chain: ArviZ needs at least 4 draws per chain.
    smoke_budget = 10

    def __init__(self, num_chains: int = 2, num_warmup: int | None = None, full_mass: bool = False,
                 init: Callable[[int], dict[str, torch.Tensor]] | None = None) -> None:
        """``num_chains`` chains share the budget (two is the fewest for which R-hat means
        anything); ``num_warmup`` iterations per chain, by default as many as it keeps;
        ``full_mass`` adapts a dense mass matrix instead of a diagonal one (worth its O(d²)
        per step on small, strongly correlated posteriors: gold-standard builds use it);
        ``init(chain)`` gives a chain's starting point in Pyro's unconstrained coordinates
        (by default a fresh ``init_to_uniform`` draw in (-2, 2) per chain)."""
        self.num_chains, self.num_warmup, self.full_mass, self.init = num_chains, num_warmup, full_mass, init

    @abc.abstractmethod
    def kernel(self, potential: CountingPotential) -> MCMCKernel:
        """The transition kernel, driven by the counted potential."""

    def not_applicable(self, target: Target) -> str | None:
        return hamiltonian_not_applicable(target)

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        per_chain = max(budget // self.num_chains, 1)
        chains = run_chains(target, self.kernel, self.num_chains, per_chain,
                            per_chain if self.num_warmup is None else self.num_warmup, self.init)
        moments, marginals = summarise_draws(target, chains.draws)
        checks = [convergence(values, self.num_chains) for values in target.quantities(chains.draws).values()]
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            kind=ResultKind.MCMC, draws=chains.draws, num_chains=self.num_chains,
            log_evidence=float("nan"), log_evidence_se=float("nan"),
            moments=moments, local_marginals=marginals,
            cost=Cost(wall_s=0.0, density_evals=chains.density_evals, grad_evals=chains.grad_evals),
            diagnostics=Diagnostics(ess_min=float(torch.cat([ess.reshape(-1) for _, ess, _ in checks]).min()),
                                    rhat_max=float(torch.cat([rhat.reshape(-1) for _, _, rhat in checks]).max()),
                                    divergences=float(chains.divergences)),
            sample_stats=chains.sample_stats,
        )


class NUTS(_HamiltonianMethod):
    name = "nuts"
    description = "No-U-Turn sampler (Pyro), 2 chains, adapted step size and diagonal mass"

    def kernel(self, potential: CountingPotential) -> MCMCKernel:
        return nuts_kernel(potential, self.full_mass)


class HMC(_HamiltonianMethod):
    name = "hmc"
    description = "static HMC (Pyro), trajectory length pi/2, adapted step size and diagonal mass"

    def kernel(self, potential: CountingPotential) -> MCMCKernel:
        return hmc_kernel(potential, self.full_mass)
