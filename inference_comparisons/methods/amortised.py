"""Methods built on an amortised guide (a trained encoder q(z_n | x_n)): the encoder itself,
the IWAE bound with the encoder as proposal, and semi-amortised SVI started at it.

All three need per-datapoint importance weights log w_nk = log p(x_n, z_nk) - log q(z_nk | x_n),
which exist only when every latent is a local inside the data plate; they are computed
here from one vectorised pass of model and guide under an outer particle plate, not with
``RenyiELBO`` (DESIGN.md §7). Applicable only to targets that set ``amortised_guide``.

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

import contextlib
import math
import warnings
from typing import Callable

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.optim
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.infer import SVI as PyroSVI
from pyro.infer import Trace_ELBO
from pyro.poutine.subsample_messenger import _Subsample

from zoo.base import Moments, Target

from inference_comparisons._arviz import arviz
from inference_comparisons.base import Cost, InferenceMethod, InferenceResult, summarise_draws
# The semi-amortised refinement uses svi's step size, evaluation draws and step loop.
from inference_comparisons.methods.svi import LEARNING_RATE, NUM_EVAL_PARTICLES, run_steps

__all__ = ["IWAE", "SVIAmortised", "SVISemiAmortised", "per_datapoint_khat", "per_datapoint_log_weights",
           "per_datapoint_log_mean_exp"]

#: Particle x data-point pairs per vectorised pass: bounds memory for wide decoders.
PAIRS_PER_PASS = 20_000

_PARTICLE_LADDERS = {"quick": (100, 1_000), "default": (10, 100, 1_000, 10_000),
                     "thorough": (10, 100, 1_000, 10_000, 100_000)}


def _vectorised(fn: Callable[[], None], num: int, dim: int) -> Callable[[], None]:
    def wrapped() -> None:
        with pyro.plate("particles", num, dim=dim):
            fn()

    return wrapped


def per_datapoint_log_weights(model: Callable[[], None], proposal: Callable[[], None], num_particles: int,
                              max_plate_nesting: int, sites: tuple[str, ...],
                              pairs_per_pass: int = PAIRS_PER_PASS,
                              keep_draws: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """log p(x_n, z_nk) - log q(z_nk | x_n), ``(K, N)``, and the draws ``(K, *site_shape)``
    (an empty dict with ``keep_draws=False``, which saves memory for large K).

    Raises ``ValueError`` if a sample site is not batched over the data plate (a global
    latent, or a site outside the plate), where per-datapoint weights do not exist.
    """
    dim = -(max_plate_nesting + 1)
    log_weights: list[torch.Tensor] = []
    draws: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    start, chunk = 0, None
    with torch.no_grad():
        while start < num_particles:
            num = min(chunk or 1, num_particles - start)
            guide_trace = poutine.trace(_vectorised(proposal, num, dim)).get_trace()
            model_trace = poutine.trace(poutine.replay(_vectorised(model, num, dim), trace=guide_trace)).get_trace()
            total = None
            for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                for name, site in trace.nodes.items():
                    if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                        continue  # the plates' own subsample sites carry no density
                    lp = site["fn"].log_prob(site["value"])
                    if lp.dim() != 2 or lp.shape[0] != num or (total is not None and lp.shape != total.shape) \
                            or not isinstance(site["scale"], (int, float)) or site["scale"] != 1.0:
                        raise ValueError(f"site {name!r} has log-density shape {tuple(lp.shape)} under {num} particles "
                                         f"(or is scaled): per-datapoint weights need every site inside one unscaled "
                                         f"data plate")
                    total = sign * lp if total is None else total + sign * lp
            assert total is not None
            log_weights.append(total)
            for s in sites if keep_draws else ():
                draws[s].append(guide_trace.nodes[s]["value"].expand((num,) + guide_trace.nodes[s]["value"].shape[1:]))
            start += num
            chunk = max(1, pairs_per_pass // total.shape[1])
    return torch.cat(log_weights), ({s: torch.cat(v) for s, v in draws.items()} if keep_draws else {})


def per_datapoint_log_mean_exp(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) log (1/K) sum_k w_nk and its delta-method standard error sd(w)/(mean(w) sqrt(K))."""
    num = log_weights.shape[0]
    estimate = log_weights.logsumexp(0) - math.log(num)
    normalised = (log_weights - log_weights.max(0).values).exp()
    se = normalised.std(0) / (normalised.mean(0) * math.sqrt(num)) if num > 1 else torch.full_like(estimate, math.inf)
    return estimate, se


def per_datapoint_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """(N,) PSIS k̂ of each data point's K weights (NaN when K < 100: the Pareto tail fit
    uses ~3 sqrt(K) of them, too few below that for k̂ to mean anything)."""
    if log_weights.shape[0] < 100:
        return torch.full((log_weights.shape[1],), float("nan"), dtype=torch.float64)
    lw = log_weights.T.detach().to(torch.float64).numpy()
    with warnings.catch_warnings():
        # ArviZ warns when k̂ > 0.7; here that is the measurement, not a problem.
        warnings.filterwarnings("ignore", message=".*shape parameter of Pareto.*")
        # Its generalised-Pareto fit overflows harmlessly (exp of a large profile term) on
        # near-uniform weights, which the encoder gives on data points it fits well.
        warnings.filterwarnings("ignore", message="overflow encountered in exp", category=RuntimeWarning)
        _, khat = arviz().psislw(lw - lw.max(-1, keepdims=True))
    return torch.as_tensor(np.asarray(khat, dtype=np.float64)).reshape(-1)


class _AmortisedMethod(InferenceMethod):
    def not_applicable(self, target: Target) -> str | None:
        if target.amortised_guide is None:
            return "this target has no amortised guide (a trained encoder q(z_n | x_n)) to evaluate or refine"
        if target.discrete_sites:
            return "per-datapoint reparameterised weights need continuous latents"
        return None

    def _evaluate(self, target: Target, proposal: Callable[[], None], num: int, budget: int, seed: int,
                  grad_evals: int, extras: dict) -> InferenceResult:
        """The guide as the answer: ELBO, equally weighted moments, worst per-datapoint k̂."""
        log_weights, draws = per_datapoint_log_weights(target.model, proposal, num, target.max_plate_nesting,
                                                       target.latent_sites)
        elbo = log_weights.mean(0)
        se = math.sqrt(float((log_weights.var(0) / num).sum())) if num > 1 else float("nan")
        moments, marginals = summarise_draws(target, draws)
        khat = per_datapoint_khat(log_weights)
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            draws=draws, log_weights=None, num_chains=1, log_evidence=float(elbo.sum()), log_evidence_se=se,
            moments=moments, local_marginals=marginals,
            cost=Cost(wall_s=0.0, density_evals=num, grad_evals=grad_evals),
            diagnostics={"khat": float(khat.max())},
            extras=dict(extras, elbo_per_datapoint=elbo, khat_per_datapoint=khat),
        )


class SVIAmortised(_AmortisedMethod):
    name = "svi_amortised"
    budget_unit = "particles"
    ladders = {"quick": (1_000,), "default": (1_000, 10_000), "thorough": (1_000, 10_000, 100_000)}
    description = "the trained encoder as the variational answer (amortised SVI; training cost not counted)"

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        assert target.amortised_guide is not None
        return self._evaluate(target, target.amortised_guide, budget, budget, seed, 0, {})


class IWAE(_AmortisedMethod):
    name = "iwae"
    budget_unit = "particles"
    ladders = _PARTICLE_LADDERS
    description = "per-datapoint IWAE bound with K encoder particles (importance sampling per data point)"

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        assert target.amortised_guide is not None
        log_weights, draws = per_datapoint_log_weights(target.model, target.amortised_guide, budget,
                                                       target.max_plate_nesting, target.latent_sites)
        bound, se = per_datapoint_log_mean_exp(log_weights)
        weights = (log_weights - log_weights.logsumexp(0)).exp().to(torch.float64)  # (K, N)
        num_data = weights.shape[1]
        moments = {}
        for name, values in target.quantities(draws).items():
            if values.dim() < 2 or values.shape[1] != num_data:
                raise ValueError(f"iwae: quantity {name!r} of shape {tuple(values.shape)} is not per data point")
            w = weights.reshape(weights.shape + (1,) * (values.dim() - 2))
            mean = (w * values).sum(0)
            sd = (w * (values - mean) ** 2).sum(0).clamp_min(0).sqrt()
            moments[name] = Moments(mean, sd, torch.full_like(mean, float("nan")))
        # Equally weighted draws: each data point's particles resampled by its own weights.
        index = torch.multinomial(weights.T, budget, replacement=True).T  # (K, N)
        columns = torch.arange(num_data)
        resampled = {s: v[index, columns] for s, v in draws.items()}
        khat = per_datapoint_khat(log_weights)
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            draws=resampled, log_weights=None, num_chains=1, log_evidence=float(bound.sum()),
            log_evidence_se=float(se.pow(2).sum().sqrt()), moments=moments, local_marginals={},
            cost=Cost(wall_s=0.0, density_evals=budget, grad_evals=0),
            diagnostics={"khat": float(khat.max())},  # NaN below 100 particles
            extras={"bound_per_datapoint": bound, "khat_per_datapoint": khat},
        )


def semi_amortised_guide(target: Target) -> Callable[[], None]:
    """A per-datapoint diagonal Gaussian guide over each latent site, inside the amortised
    guide's own plates, with parameters started at the amortised guide's output."""
    assert target.amortised_guide is not None
    with torch.no_grad():
        trace = poutine.trace(target.amortised_guide).get_trace()
    start = {}
    for s in target.latent_sites:
        site = trace.nodes[s]
        base = site["fn"]
        while isinstance(base, dist.Independent):
            base = base.base_dist
        start[s] = (base.mean.detach(), base.stddev.detach(), site["fn"].event_dim,
                    [(f.name, f.size, f.dim) for f in site["cond_indep_stack"]])

    def guide() -> None:
        for s, (loc0, scale0, event_dim, frames) in start.items():
            loc = pyro.param(f"{s}_loc", loc0.clone())
            scale = pyro.param(f"{s}_scale", scale0.clone(), constraint=constraints.positive)
            with contextlib.ExitStack() as stack:  # the site's own plates, as in the model
                for name, size, dim in frames:
                    stack.enter_context(pyro.plate(name, size, dim=dim))
                pyro.sample(s, dist.Normal(loc, scale).to_event(event_dim))

    return guide


class SVISemiAmortised(_AmortisedMethod):
    name = "svi_semi_amortised"
    budget_unit = "steps"
    ladders = {"quick": (100,), "default": (30, 100, 300), "thorough": (100, 300, 1000)}
    description = "per-datapoint Gaussian guide started at the encoder, refined by Trace_ELBO (Adam)"

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        guide = semi_amortised_guide(target)
        svi = PyroSVI(target.model, guide, pyro.optim.Adam({"lr": LEARNING_RATE}),
                      Trace_ELBO(max_plate_nesting=target.max_plate_nesting))
        losses = run_steps(svi, budget)
        return self._evaluate(target, guide, NUM_EVAL_PARTICLES, budget, seed, budget, {"losses": losses})
