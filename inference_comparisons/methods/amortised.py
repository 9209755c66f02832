"""Methods built on an amortised guide (a trained encoder q(z_n | x_n)): the encoder itself,
the IWAE bound with the encoder as proposal, and semi-amortised SVI started at it.

All three need per-datapoint importance weights log w_nk = log p(x_n, z_nk) - log q(z_nk | x_n)
(:func:`~inference_comparisons.estimators.particles.per_datapoint_log_weights`), which exist
only when every latent is a local inside the data plate. Applicable only to targets with an
amortised guide.

- ``svi_amortised``: the trained encoder *is* the variational answer (no optimisation at
  inference time, its training cost is amortised over all data and not counted). Reported
  evidence: its ELBO (a bound, like ``svi``); k̂: the worst per-datapoint PSIS k̂ of the
  encoder as a proposal. Budget: the particles that estimate ELBO and moments.
- ``iwae``: the per-datapoint IWAE bound sum_n log (1/K) sum_k w_nk with K = budget
  particles from the encoder (Burda et al. 2016): importance sampling with the encoder as
  proposal, done per data point, so it tightens with K towards log p(x). Moments are
  self-normalised per data point. (``is_guide`` instead fits a mean-field AutoNormal by SVI
  and importance-samples the whole dataset jointly.)
- ``svi_semi_amortised``: a per-datapoint Gaussian guide started at the encoder's output and
  refined by ``budget`` steps of Trace_ELBO (Kim et al. 2018); evaluated like ``svi``.
"""

from __future__ import annotations

import math
from typing import Callable

import pyro
import pyro.distributions as dist
import pyro.optim
import torch
from pyro.distributions import constraints
from pyro.infer import SVI as PyroSVI
from pyro.infer import Trace_ELBO

from zoo.base import Moments, Target
from zoo.numerics import log_mean_exp

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.guides import amortised_sites, plates
from inference_comparisons.estimators.moments import per_datapoint_moments, summarise_draws
from inference_comparisons.estimators.particles import per_datapoint_log_weights
from inference_comparisons.estimators.weights import normalised_weights, per_datapoint_khat
# The semi-amortised refinement uses svi's step size, evaluation draws and step loop.
from inference_comparisons.methods.svi import LEARNING_RATE, NUM_EVAL_PARTICLES, run_steps

__all__ = ["IWAE", "SVIAmortised", "SVISemiAmortised", "semi_amortised_guide"]

_PARTICLE_LADDERS = {"quick": (100, 1_000), "default": (10, 100, 1_000, 10_000),
                     "thorough": (10, 100, 1_000, 10_000, 100_000)}


class _AmortisedMethod(InferenceMethod):
    def not_applicable(self, target: Target) -> str | None:
        if not target.has_amortised_guide:
            return "this target has no amortised guide (a trained encoder q(z_n | x_n)) to evaluate or refine"
        if target.discrete_sites:
            return "per-datapoint reparameterised weights need continuous latents"
        return None

    def _evaluate(self, target: Target, proposal: Callable[[], None], num: int, budget: int, seed: int,
                  grad_evals: int, losses: tuple[float, ...] = ()) -> InferenceResult:
        """The guide as the answer: ELBO, equally weighted moments, worst per-datapoint k̂."""
        log_weights, draws = per_datapoint_log_weights(target.model, proposal, num, target.max_plate_nesting,
                                                       target.latent_sites)
        elbo = log_weights.mean(0)
        se = math.sqrt(float((log_weights.var(0) / num).sum())) if num > 1 else float("nan")
        moments, marginals = summarise_draws(target, draws)
        khat = per_datapoint_khat(log_weights)
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            kind=ResultKind.INDEPENDENT, draws=draws, log_evidence=float(elbo.sum()), log_evidence_se=se,
            moments=moments, local_marginals=marginals,
            cost=Cost(wall_s=0.0, density_evals=num, grad_evals=grad_evals),
            diagnostics=Diagnostics(khat=float(khat.max())), losses=losses,
            per_datapoint={"elbo": elbo, "khat": khat},
        )


class SVIAmortised(_AmortisedMethod):
    name = "svi_amortised"
    budget_unit = "particles"
    ladders = {"quick": (1_000,), "default": (1_000, 10_000), "thorough": (1_000, 10_000, 100_000)}
    description = "the trained encoder as the variational answer (amortised SVI; training cost not counted)"
    #: At least 100 particles: per-datapoint k̂ is computed (NaN below that).
    smoke_budget = 200

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        return self._evaluate(target, target.amortised_guide, budget, budget, seed, 0)


class IWAE(_AmortisedMethod):
    name = "iwae"
    budget_unit = "particles"
    ladders = _PARTICLE_LADDERS
    description = "per-datapoint IWAE bound with K encoder particles (importance sampling per data point)"
    smoke_budget = 200

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        log_weights, draws = per_datapoint_log_weights(target.model, target.amortised_guide, budget,
                                                       target.max_plate_nesting, target.latent_sites)
        bound, se = log_mean_exp(log_weights)
        moments = {name: Moments(mean, sd, torch.full_like(mean, float("nan")))
                   for name, (mean, sd, _) in per_datapoint_moments(target, draws, log_weights).items()}
        # Equally weighted draws: each data point's particles resampled by its own weights.
        weights = normalised_weights(log_weights)  # (K, N)
        index = torch.multinomial(weights.T, budget, replacement=True).T  # (K, N)
        columns = torch.arange(weights.shape[1])
        resampled = {s: v[index, columns] for s, v in draws.items()}
        khat = per_datapoint_khat(log_weights)
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            kind=ResultKind.INDEPENDENT, draws=resampled, log_evidence=float(bound.sum()),
            log_evidence_se=float(se.pow(2).sum().sqrt()), moments=moments, local_marginals={},
            cost=Cost(wall_s=0.0, density_evals=budget, grad_evals=0),
            diagnostics=Diagnostics(khat=float(khat.max())),  # NaN below 100 particles
            per_datapoint={"bound": bound, "khat": khat},
        )


def semi_amortised_guide(target: Target) -> Callable[[], None]:
    """A per-datapoint diagonal Gaussian guide over each latent site, inside the amortised
    guide's own plates, with parameters started at the amortised guide's output."""
    sites = amortised_sites(target)

    def guide() -> None:
        for name, site in sites.items():
            loc = pyro.param(f"{name}_loc", site.loc.clone())
            scale = pyro.param(f"{name}_scale", site.scale.clone(), constraint=constraints.positive)
            with plates(site.frames):  # the site's own plates, as in the model
                pyro.sample(name, dist.Normal(loc, scale).to_event(site.event_dim))

    return guide


class SVISemiAmortised(_AmortisedMethod):
    name = "svi_semi_amortised"
    budget_unit = "steps"
    ladders = {"quick": (100,), "default": (30, 100, 300), "thorough": (100, 300, 1000)}
    description = "per-datapoint Gaussian guide started at the encoder, refined by Trace_ELBO (Adam)"
    smoke_budget = 20

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        guide = semi_amortised_guide(target)
        svi = PyroSVI(target.model, guide, pyro.optim.Adam({"lr": LEARNING_RATE}),
                      Trace_ELBO(max_plate_nesting=target.max_plate_nesting))
        losses = run_steps(svi, budget)
        return self._evaluate(target, guide, NUM_EVAL_PARTICLES, budget, seed, budget, tuple(losses))
