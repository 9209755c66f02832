"""Gold-standard references of targets whose every latent is local and which have an
amortised guide (the VAE): per-datapoint importance sampling, with NUTS as a cross-check.

The proposal is the defensive mixture (:class:`zoo.distributions.DefensiveMixture`, weights
:data:`zoo.distributions.DEFENSIVE_WEIGHTS`) of the encoder, a Student-t(2) at the encoder's
location with twice its scale, and the model's prior (Hesterberg 1995): the prior component
bounds every weight by p(x_n | z) / 0.1, the t component covers an encoder that is too
narrow, and the encoder component keeps most particles where it puts them.
"""

from __future__ import annotations

import datetime
import math
import platform
import time
from typing import Callable

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from zoo.base import Moments, Reference, Target, ZooModel
from zoo.distributions import DEFENSIVE_WEIGHTS, DefensiveMixture
from zoo.numerics import log_mean_exp

from inference_comparisons.estimators.guides import AmortisedSite, amortised_sites, plated_guide
from inference_comparisons.estimators.hmc import convergence, nuts_kernel, run_chains
from inference_comparisons.estimators.moments import per_datapoint_moments
from inference_comparisons.estimators.particles import per_datapoint_log_weights
from inference_comparisons.estimators.state import prepare_cell
from inference_comparisons.estimators.weights import per_datapoint_khat
from inference_comparisons.references.evidence import PROPOSAL_DF
from inference_comparisons.references.gates import GATES, GoldStandardError

__all__ = ["AMORTISED_PARTICLES", "build_amortised_reference"]

#: Particles per data point of the amortised references' two evidence estimators.
AMORTISED_PARTICLES = 100_000


def _defensive_proposal(problem: Target, sites: dict[str, AmortisedSite]) -> Callable[[], None]:
    """The defensive mixture built on the amortised guide, as a guide over its plates."""
    with torch.no_grad():
        model_trace = poutine.trace(problem.model).get_trace()
    proposals = {}
    for name, site in sites.items():
        q = site.distribution
        prior = model_trace.nodes[name]["fn"]
        proposals[name] = (site.frames, DefensiveMixture(
            [q, dist.StudentT(2.0, site.loc, 2 * site.scale).to_event(site.event_dim), prior.expand(q.batch_shape)],
            DEFENSIVE_WEIGHTS))
    return plated_guide(proposals)


def _student_t_evidence(problem: Target, sites: dict[str, AmortisedSite], moments: dict[str, Moments],
                        num_particles: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The independent evidence estimator: importance sampling per data point from a
    Student-t at the reference's posterior mean and sd; (N,) estimates, se and k̂."""
    fitted = {name: (site.frames, dist.StudentT(PROPOSAL_DF, moments[name].mean, moments[name].sd.clamp_min(1e-6))
                     .to_event(site.event_dim)) for name, site in sites.items()}
    log_weights, _ = per_datapoint_log_weights(problem.model, plated_guide(fitted), num_particles,
                                               problem.max_plate_nesting, problem.latent_sites, keep_draws=False)
    estimate, se = log_mean_exp(log_weights)
    return estimate, se, per_datapoint_khat(log_weights)


def _nuts_cross_check(problem: Target, moments: dict[str, Moments], num_chains: int, draws_per_chain: int,
                      num_warmup: int) -> dict:
    """NUTS on all data points' latents at once, compared with ``moments`` on the coordinates
    where its chains agree (R-hat < 1.01); skipped with ``num_chains=0`` (quick recomputations)."""
    if num_chains == 0:
        return {"nuts_cross_check": {}, "nuts_divergences": 0, "nuts_grad_evals": 0}
    nuts = run_chains(problem, nuts_kernel, num_chains, draws_per_chain, num_warmup)
    check = {}
    for name, values in problem.quantities(nuts.draws).items():
        grouped, ess, rhat = convergence(values, num_chains)
        values = grouped.flatten(0, 1)
        mixed = rhat < 1.01
        error = (values.mean(0) - moments[name].mean).abs() / (
            moments[name].se ** 2 + values.std(0) ** 2 / ess).sqrt()
        check[name] = {"fraction_mixed": float(mixed.double().mean()),
                       "max_abs_z_mixed": float(error[mixed].max()) if mixed.any() else float("nan"),
                       "ess_min_mixed": float(ess[mixed].min()) if mixed.any() else float("nan")}
    return {"nuts_cross_check": check, "nuts_divergences": nuts.divergences, "nuts_grad_evals": nuts.grad_evals}


def build_amortised_reference(model: ZooModel, data: torch.Tensor, target: str = "latent", *,
                              num_chains: int = 4, draws_per_chain: int = 1_000, num_warmup: int = 500,
                              num_particles: int = AMORTISED_PARTICLES, num_moment_particles: int = 20_000,
                              seed: int = 0, enforce_gates: bool = True, command: str = "") -> Reference:
    """Reference for a target whose latents are all local, with an amortised guide.

    log p(x_n): importance sampling per data point with ``num_particles`` draws from a
    defensive mixture built on the encoder (:data:`DEFENSIVE_WEIGHTS`), with standard error
    and k̂ per data point. Moments: the same proposal, self-normalised per data point with
    ``num_moment_particles`` fresh draws (se = sd / sqrt(ESS of the weights)). Per-datapoint
    posteriors of a nonlinear decoder can be multimodal (the curve folds), which NUTS does not
    cross between, so NUTS (all data points' latents at once: the posterior factorises) is
    a recorded cross-check of the moments on the coordinates where its chains agree
    (R-hat < 1.01), not their source. Second, independent evidence estimator: importance
    sampling from a Student-t(df=:data:`PROPOSAL_DF`) per data point at the reference's posterior
    mean and sd.
    """
    problem = model.target(data, target)
    prepare_cell(seed)
    start = time.perf_counter()
    sites_of = amortised_sites(problem)
    proposal = _defensive_proposal(problem, sites_of)
    sites, nesting = problem.latent_sites, problem.max_plate_nesting
    log_weights, _ = per_datapoint_log_weights(problem.model, proposal, num_particles, nesting, sites,
                                               keep_draws=False)
    estimate, se = log_mean_exp(log_weights)
    khat = per_datapoint_khat(log_weights)
    log_weights, draws = per_datapoint_log_weights(problem.model, proposal, num_moment_particles, nesting, sites)
    summaries = per_datapoint_moments(problem, draws, log_weights)
    moments = {name: Moments(mean, sd, sd / ess.sqrt()) for name, (mean, sd, ess) in summaries.items()}
    ess_is = next(iter(summaries.values()))[2]
    check, check_se, check_khat = _student_t_evidence(problem, sites_of, moments, num_particles)
    total, total_se = float(estimate.sum()), float(se.pow(2).sum().sqrt())
    check_total, check_total_se = float(check.sum()), float(check_se.pow(2).sum().sqrt())
    per_point_z = (estimate - check) / (se ** 2 + check_se ** 2).sqrt()
    is_seconds = time.perf_counter() - start
    nuts_check = _nuts_cross_check(problem, moments, num_chains, draws_per_chain, num_warmup)
    diagnostics = {
        "khat": float(khat.max()), "khat_cross_check": float(check_khat.max()),
        "ess_min": float(ess_is.min()),
        "cross_check_z": (total - check_total) / math.hypot(total_se, check_total_se),
        "cross_check_max_abs_z_per_datapoint": float(per_point_z.abs().max()),
        **nuts_check, "importance_wall_s": round(is_seconds, 1),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    failed = [f"{key}={diagnostics[key]:.4g}" for key, ok in (
        ("khat", diagnostics["khat"] < GATES["khat_max"]),
        ("cross_check_z", abs(diagnostics["cross_check_z"]) < 4)) if not ok]
    if enforce_gates and failed:
        raise GoldStandardError(f"{model.name}/{target}: reference failed gates: {', '.join(failed)}")
    return Reference(
        log_evidence=total, log_evidence_se=total_se, exact=False, moments=moments, local_marginals={},
        provenance={
            "method": (f"log p(x_n) by importance sampling per data point with {num_particles} particles from the "
                       f"defensive mixture {DEFENSIVE_WEIGHTS} of (encoder, Student-t(2) at the encoder with twice its "
                       f"scale, prior); moments self-normalised per data point from {num_moment_particles} fresh "
                       f"draws of it, se = sd / sqrt(ESS of the weights); cross-checks: {num_particles} particles per "
                       f"data point from a Student-t(df={PROPOSAL_DF}) at the posterior mean and sd (evidence), and "
                       f"NUTS {num_chains} chains x {draws_per_chain} draws ({num_warmup} warm-up) on all latents "
                       f"jointly (moments, on coordinates with R-hat < 1.01)"),
            "command": command, "seed": seed, "model": model.name, "config": model.config(),
            "num_datapoints": int(data.shape[0]),
            "gates": {"khat_max": GATES["khat_max"], "cross_check_abs_z": 4}, "diagnostics": diagnostics,
            "log_evidence_cross_check": check_total, "log_evidence_cross_check_se": check_total_se,
            "per_datapoint": {
                "log_evidence": estimate.tolist(), "log_evidence_se": se.tolist(), "khat": khat.tolist(),
                "log_evidence_cross_check": check.tolist(), "log_evidence_cross_check_se": check_se.tolist(),
                "khat_cross_check": check_khat.tolist(),
            },
            "versions": {"torch": str(torch.__version__), "pyro": pyro.__version__,
                         "python": platform.python_version()},
            "created": datetime.date.today().isoformat(),
        },
    )
