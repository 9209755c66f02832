"""Many short chains in lockstep, one batched gradient per leapfrog step for all of them:
ChEES-HMC (:mod:`~inference_comparisons.estimators.chees`) and NUTS
(:mod:`~inference_comparisons.estimators.lockstep_nuts`), side by side on equal terms, and
data-augmentation Gibbs (:mod:`~inference_comparisons.estimators.gibbs`), which moves the
globals by the same HMC transitions with the discrete locals drawn back in.

Chains start in superchains: the chains of one superchain share a starting point, drawn
from the Laplace approximation of the heaviest mode a short L-BFGS search finds (Gibbs: the
target's data start; NeuTra: the flow's base), so the nested R-hat (Margossian et al.
2024), which these methods report as ``rhat_max``, asks whether they have forgotten it.
The budget is the total number of kept draws, across chains, as for ``nuts``; every
chain's gradients are counted, warm-up and the mode search included.
"""

from __future__ import annotations

import abc
import math

import torch

from zoo.augmentation import DataAugmentation
from zoo.base import Target

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.chees import run_chees
from inference_comparisons.estimators.gibbs import run_gibbs
from inference_comparisons.estimators.lockstep import LockstepChains
from inference_comparisons.estimators.lockstep_nuts import run_lockstep_nuts
from inference_comparisons.estimators.modes import laplace_starts
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.potential import FlatPotential, WarpedPotential
from inference_comparisons.estimators.sampler_stats import effective_sample_size, nested_rhat
from inference_comparisons.methods.mcmc import hamiltonian_not_applicable
from inference_comparisons.methods.svi import SVIFlow, fit_guide, flow

__all__ = ["ChEES", "Gibbs", "LockstepNUTS", "NeuTra"]

#: Half-width of the uniform jitter of Gibbs's superchain starts around the data start.
START_JITTER = 0.5


class _Lockstep(InferenceMethod):
    budget_unit = "draws"
    #: 4 draws per chain of 8 chains: ArviZ needs at least 4 draws per chain.
    smoke_budget = 32

    def __init__(self, num_chains: int, num_superchains: int, num_warmup: int) -> None:
        """``num_chains`` chains in ``num_superchains`` groups sharing a start (it must
        divide them, with at least 2 groups); ``num_warmup`` adapting iterations."""
        if num_superchains < 2 or num_chains % num_superchains:
            raise ValueError(f"{self.name}: num_chains ({num_chains}) must be a multiple of num_superchains "
                             f"({num_superchains}), with at least 2 superchains for the nested R-hat")
        if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
            raise ValueError(f"{self.name}: num_warmup must be a non-negative integer, got {num_warmup!r}")
        self.num_chains, self.num_superchains, self.num_warmup = num_chains, num_superchains, num_warmup

    def for_smoke_test(self) -> "_Lockstep":
        return type(self)(num_chains=8, num_superchains=2, num_warmup=20)

    def not_applicable(self, target: Target) -> str | None:
        return hamiltonian_not_applicable(target)

    @abc.abstractmethod
    def sample(self, space: FlatPotential, start: torch.Tensor, num_draws: int) -> LockstepChains:
        """Warm up from ``start`` (C, d), then ``num_draws`` draws of every chain."""

    def make_space(self, target: Target) -> FlatPotential | WarpedPotential:
        """The flat space the chains move in: the target's unconstrained coordinates."""
        return FlatPotential(target)

    def superchain_starts(self, space: FlatPotential | WarpedPotential) -> torch.Tensor:
        """Each superchain's start (num_superchains, d): a draw from the Laplace
        approximation of the heaviest mode L-BFGS finds from ``num_superchains`` uniform
        starts (:func:`~inference_comparisons.estimators.modes.laplace_starts`; its
        gradients are counted), or uniform in (-2, 2), as Pyro's ``init_to_uniform``, when no
        optimum has a positive-definite Hessian. From uniform starts, one superchain of 8 sat
        in a local mode of the HMM 60 nats down for all of ChEES's warm-up (mean error 4.0
        posterior sd, nested R-hat 1.77); from Laplace draws, 0.07 and 1.01."""
        starts = laplace_starts(space, self.num_superchains, self.num_superchains)
        if starts is None:
            starts = 4 * torch.rand(self.num_superchains, space.dim, dtype=torch.float64) - 2
        return starts

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        if budget < self.num_chains:
            raise ValueError(f"{self.name}: a budget of {budget} draws is less than one draw per chain for "
                             f"{self.num_chains} chains; use at least {self.num_chains}")
        per_chain = budget // self.num_chains
        space = self.make_space(target)
        start = self.superchain_starts(space).repeat_interleave(self.num_chains // self.num_superchains, dim=0)
        chains = self.sample(space, start, per_chain)
        # (draws, chains, d) -> chains concatenated, as every MCMC result holds them.
        flat = chains.states.transpose(0, 1).reshape(self.num_chains * per_chain, space.dim)
        draws = {site: value.detach() for site, value in space.constrained(flat)[0].items()}
        moments, marginals = summarise_draws(target, draws)
        ess, rhat = [], []
        for values in target.quantities(draws).values():
            grouped = values.reshape(self.num_chains, per_chain, -1)
            ess.append(effective_sample_size(grouped))
            rhat.append(nested_rhat(grouped, self.num_superchains))
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            kind=ResultKind.MCMC, draws=draws, num_chains=self.num_chains,
            log_evidence=float("nan"), log_evidence_se=float("nan"), moments=moments, local_marginals=marginals,
            cost=Cost(wall_s=0.0, density_evals=space.counted.density_evals, grad_evals=space.counted.grad_evals),
            diagnostics=Diagnostics(ess_min=float(torch.cat(ess).min()), rhat_max=float(torch.cat(rhat).max()),
                                    divergences=float(chains.divergences)),
            sample_stats={name: value.T.reshape(-1) for name, value in chains.stats.items()},
        )


class ChEES(_Lockstep):
    name = "chees"
    ladders = {"quick": (256, 1024), "default": (1024, 4096), "thorough": (1024, 4096, 16384)}
    description = ("ChEES-HMC (Hoffman, Radul & Sountsov 2021): 32 chains in lockstep, one batched gradient a "
                   "leapfrog step, adapted trajectory length and diagonal mass; nested R-hat")

    def __init__(self, num_chains: int = 32, num_superchains: int = 8, num_warmup: int = 200) -> None:
        super().__init__(num_chains, num_superchains, num_warmup)

    def sample(self, space: FlatPotential, start: torch.Tensor, num_draws: int) -> LockstepChains:
        return run_chees(space, start, self.num_warmup, num_draws)


class LockstepNUTS(_Lockstep):
    name = "nuts_lockstep"
    # One default budget: its 4,096-draw cells cost 392 s of a default sweep's cells
    # (PPCA's 400 latents alone 187 s), ChEES's 127 s.
    ladders = {"quick": (256, 1024), "default": (1024,), "thorough": (1024, 4096, 16384)}
    description = ("multinomial NUTS, 16 chains in lockstep: one batched gradient a leapfrog step for the chains "
                   "still growing their trees; step size and diagonal mass adapted across chains; nested R-hat")

    def __init__(self, num_chains: int = 16, num_superchains: int = 4, num_warmup: int = 200) -> None:
        super().__init__(num_chains, num_superchains, num_warmup)

    def sample(self, space: FlatPotential, start: torch.Tensor, num_draws: int) -> LockstepChains:
        return run_lockstep_nuts(space, start, self.num_warmup, num_draws)


class Gibbs(_Lockstep):
    name = "gibbs"
    ladders = {"quick": (256,), "default": (256, 1024), "thorough": (1024, 4096, 16384)}
    description = ("data-augmentation Gibbs: the discrete locals drawn exactly given the globals (responsibilities, "
                   "FFBS), then an HMC step of the globals given them; 8 chains in lockstep; nested R-hat")

    def __init__(self, num_chains: int = 8, num_superchains: int = 4, num_warmup: int = 200) -> None:
        super().__init__(num_chains, num_superchains, num_warmup)

    def not_applicable(self, target: Target) -> str | None:
        if isinstance(target, DataAugmentation):
            return None
        if target.discrete_sites:
            return "the globals are fixed, so the locals' exact posterior needs no alternation: see exact"
        return "this target sums out no discrete locals for Gibbs to bring back (zoo.augmentation.DataAugmentation)"

    def superchain_starts(self, space: FlatPotential) -> torch.Tensor:
        """The target's data start, moved by up to ±:data:`START_JITTER` in each
        unconstrained coordinate per superchain: from uniform starts a superchain stayed in
        a local mode of the mixture (two components sharing a cluster, R-hat 3.8), which
        data augmentation, whose locals and globals move one given the other, cannot leave."""
        start = space.problem.data_start()
        if start is None:
            return super().superchain_starts(space)
        jitter = START_JITTER * (2 * torch.rand(self.num_superchains, space.dim, dtype=torch.float64) - 1)
        return space.flatten(start) + jitter

    def sample(self, space: FlatPotential, start: torch.Tensor, num_draws: int) -> LockstepChains:
        return run_gibbs(space, start, self.num_warmup, num_draws)


class NeuTra(_Lockstep):
    name = "neutra"
    # One default budget: most of a cell is the fit, and on the 400 latents of factor
    # analysis, PPCA and the VAE a cell takes 2-6 minutes (an unconverged flow, k̂ 2.2, warps
    # the space into one with divergences, which the row shows); 16 core-minutes in all.
    ladders = {"quick": (256,), "default": (1024,), "thorough": (1024, 4096, 16384)}
    description = ("NeuTra HMC (Hoffman et al. 2019): svi_flow's guide fitted by 1,000 steps, then lockstep NUTS "
                   "(16 chains) in its base space, where the posterior is nearly a standard normal")

    def __init__(self, num_chains: int = 16, num_superchains: int = 4, num_warmup: int = 200,
                 guide_steps: int = 1000) -> None:
        """As the other lockstep samplers, and ``guide_steps`` SVI steps to fit the flow."""
        super().__init__(num_chains, num_superchains, num_warmup)
        self.guide_steps = guide_steps

    def for_smoke_test(self) -> "NeuTra":
        return type(self)(num_chains=8, num_superchains=2, num_warmup=20, guide_steps=20)

    def make_space(self, target: Target) -> WarpedPotential:
        """Fit the flow (its gradients counted with the sampler's), then warp the target's
        flat space by it. The guide orders its latent vector by its own trace; the warp
        reorders it to the flat space's sites."""
        fitted = fit_guide(target, self.guide_steps, flow, SVIFlow.particles)
        (guide,) = fitted.guide  # every latent continuous (hamiltonian_not_applicable)
        bijection = guide.get_transform()
        bijection.requires_grad_(False)
        starts, offset = {}, 0
        for site, shape in guide._unconstrained_shapes.items():
            starts[site], offset = offset, offset + math.prod(shape)
        space = FlatPotential(target)
        order = torch.cat([torch.arange(starts[site], starts[site] + math.prod(shape))
                           for site, shape in space.shapes.items()])

        def warp(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            latent = bijection(u)
            return latent[..., order], bijection.log_abs_det_jacobian(u, latent)

        space.counted.grad_evals += fitted.grad_evals
        return WarpedPotential(space, warp)

    def superchain_starts(self, space: FlatPotential | WarpedPotential) -> torch.Tensor:
        """Draws of the flow's base, a standard normal: each a draw of the fitted guide."""
        return torch.randn(self.num_superchains, space.dim, dtype=torch.float64)

    def sample(self, space: FlatPotential | WarpedPotential, start: torch.Tensor, num_draws: int) -> LockstepChains:
        return run_lockstep_nuts(space, start, self.num_warmup, num_draws)
