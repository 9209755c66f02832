"""Hamiltonian Monte Carlo and NUTS (Pyro), with every gradient evaluation counted.

MCMC runs on the target's collapsed density: the same density as the enumerated model (the
conformance tests check it) without the enumeration machinery in the inner loop. The
potential is the plain-torch ``target.log_density`` in Pyro's unconstrained coordinates,
wrapped in a counter because Pyro's NUTS exposes no per-draw step counts (DESIGN.md §7). Chains run one after another in the
same process: on 2 cores Pyro's multiprocess chains only add start-up cost.
"""

from __future__ import annotations

import abc
from typing import Callable

import pyro
import torch
from torch.distributions.transforms import Transform
from pyro.infer import HMC as PyroHMC
from pyro.infer import MCMC, NUTS as PyroNUTS
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.stats import split_gelman_rubin

from zoo.base import Target

from inference_comparisons.base import Cost, InferenceMethod, InferenceResult, summarise_draws
from inference_comparisons.counting import CountingPotential
from inference_comparisons.metrics import effective_sample_size
from inference_comparisons.methods.kernel_stats import RecordingHMC, RecordingNUTS, concatenate_sample_stats

__all__ = ["HMC", "NUTS", "fast_potential"]


def fast_potential(target: Target, constrain: dict[str, Transform]) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """-log p(x, theta) + log|J| in unconstrained coordinates from ``target.log_density``.

    Pyro's own potential re-traces the model on every call (~4 ms a gradient on the
    200-point mixture); the plain-torch density is ~20x cheaper. The tests check that the
    two agree.
    """

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        draws, log_det = {}, 0.0
        for site, transform in constrain.items():
            value = transform(params[site])
            log_det = log_det + transform.log_abs_det_jacobian(params[site], value).sum()
            draws[site] = value.unsqueeze(0)
        return -(target.log_density(draws)[0] + log_det)

    return potential


class _HamiltonianMethod(InferenceMethod):
    budget_unit = "draws"
    ladders = {"quick": (30, 100), "default": (50, 150, 500), "thorough": (300, 1000, 3000)}

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
        if not target.continuous_sites:
            return "every latent of this target is discrete; HMC needs continuous latents"
        if target.discrete_sites:
            return "this target infers discrete latents, which HMC cannot move"
        return None

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        per_chain = max(budget // self.num_chains, 1)
        chains: list[dict[str, torch.Tensor]] = []
        divergences = 0
        potential = None
        chain_stats = []  # per-draw sampler statistics for ArviZ (kernel_stats.py)
        for chain in range(self.num_chains):
            init, _, transforms, _ = initialize_model(
                target.collapsed_model, max_plate_nesting=target.max_plate_nesting)
            if self.init is not None:
                init = self.init(chain)
            # `transforms` map constrained -> unconstrained; draws come back unconstrained.
            constrain = {s: transforms[s].inv for s in target.continuous_sites}
            if potential is None:
                potential = CountingPotential(fast_potential(target, constrain))
            kernel = self.kernel(potential)
            warmup = per_chain if self.num_warmup is None else self.num_warmup
            mcmc = MCMC(kernel, num_samples=per_chain, warmup_steps=warmup,
                        initial_params=init, disable_progbar=True)
            # Pyro turns argument validation off in warm-up only. Off for the draws too, a
            # trajectory that wanders to an invalid parameter (a GMM scale of inf or NaN
            # under a too-large fixed step) gives a non-finite energy, which Pyro counts as a
            # divergence, as Stan does, instead of a ValueError that loses the whole run.
            with pyro.validation_enabled(False):
                mcmc.run()
            chain_stats.append(kernel.sample_stats())
            samples = mcmc.get_samples()
            chains.append({s: constrain[s](samples[s]).detach() for s in target.continuous_sites})
            divergences += sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
        assert potential is not None
        draws = {s: torch.cat([c[s] for c in chains]) for s in target.continuous_sites}
        moments, marginals = summarise_draws(target, draws)
        ess, rhat = [], []
        for values in target.quantities(draws).values():
            grouped = values.reshape(self.num_chains, per_chain, -1)
            ess.append(effective_sample_size(grouped))
            rhat.append(split_gelman_rubin(grouped, chain_dim=0, sample_dim=1))
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            draws=draws, log_weights=None, num_chains=self.num_chains,
            log_evidence=float("nan"), log_evidence_se=float("nan"),
            moments=moments, local_marginals=marginals,
            cost=Cost(wall_s=0.0, density_evals=potential.density_evals, grad_evals=potential.grad_evals),
            diagnostics={"ess_min": float(torch.cat(ess).min()), "rhat_max": float(torch.cat(rhat).max()),
                         "divergences": float(divergences)},
            extras={"sample_stats": concatenate_sample_stats(chain_stats)},
        )


class NUTS(_HamiltonianMethod):
    name = "nuts"
    description = "No-U-Turn sampler (Pyro), 2 chains, adapted step size and diagonal mass"

    def kernel(self, potential: CountingPotential) -> PyroNUTS:
        return RecordingNUTS(potential_fn=potential, adapt_step_size=True, adapt_mass_matrix=True,
                             full_mass=self.full_mass)


class HMC(_HamiltonianMethod):
    name = "hmc"
    #: Fixed trajectory length pi/2 in units of the adapted mass: a common default that
    #: neither NUTS's adaptivity nor a per-model tuning gives it.
    description = "static HMC (Pyro), trajectory length pi/2, adapted step size and diagonal mass"

    def kernel(self, potential: CountingPotential) -> PyroHMC:
        return RecordingHMC(potential_fn=potential, trajectory_length=torch.pi / 2,
                            adapt_step_size=True, adapt_mass_matrix=True, full_mass=self.full_mass)
