"""Building gold-standard references where no exact answer exists (DESIGN.md §6).

Posterior moments come from long multi-chain NUTS that must pass posteriordb's gates
(R-hat < 1.01, ESS > 10,000 on every quantity of interest, no divergences); the chains are
saved piece by piece as they run (reference_chains.py), so a build of hours can be resumed,
extended and spread over worker processes. Before any
chain runs, L-BFGS from random starts looks for the posterior's modes: the chains start at
draws from the Laplace approximation of the heaviest one, and every other mode found must
carry a negligible Laplace mass, because NUTS chains do not cross between separated modes
and R-hat only notices when a chain happens to start in another one. The log
evidence comes from importance sampling with a multivariate Student-t proposal fitted to
those draws in the unconstrained space (heavy tails keep the weights bounded where a
Gaussian would under-cover), and must pass k̂ < 0.5. Everything, including the command
that rebuilds it, is recorded in the reference's provenance.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.ops.stats import split_gelman_rubin

from zoo.base import Moments, Reference, Target, ZooModel, check_integer, data_fingerprint
from zoo import references

from inference_comparisons.base import summarise_draws
from inference_comparisons.metrics import effective_sample_size, psis_khat
from inference_comparisons.methods.importance import log_mean_exp
from inference_comparisons.methods.mcmc import NUTS
from inference_comparisons.reference_chains import (SEGMENT_DRAWS, FlatPotential, GoldStandardError,
                                                    open_build_directory, run_chains, save_atomically)
from inference_comparisons.runner import prepare_cell

__all__ = ["GATES", "DefensiveMixture", "GoldStandardError", "Mode", "build_amortised_reference", "build_reference",
           "find_modes", "write_reference"]

#: posteriordb's acceptance gates for a reference posterior, plus Vehtari et al.'s k̂ bound,
#: plus the largest Laplace mass (relative to the chains' mode) another mode may carry: a mode
#: of relative mass ε at δ posterior sds moves a mean by about εδ, far below the 0.01 sd
#: Monte Carlo error of an ESS of 10,000 when ε < 1e-4.
#: The last gate bounds the fraction of evidence particles whose density could not be
#: computed and were given weight zero (see _log_density_where_computable).
GATES = {"rhat_max": 1.01, "ess_min": 10_000, "divergences": 0, "khat_max": 0.5, "other_mode_mass_max": 1e-4,
         "uncomputable_max": 1e-3}
#: L-BFGS runs, from uniform(-2, 2) starts in the unconstrained space, of the mode search.
MODE_SEARCH_STARTS = 20
#: Degrees of freedom of the Student-t proposal: heavy tails keep the weights bounded.
PROPOSAL_DF = 4.0
#: Scale inflations of the proposal tried in turn until k̂ < 0.5: the gaussian fit to the
#: draws is slightly too narrow in skewed directions (a first build had k̂ = 0.53 at 1.0).
PROPOSAL_INFLATIONS = (1.2, 1.5, 2.0)
#: Safety factor on the draws a pilot (every chain's first segment) says the ESS gate needs:
#: ESS estimates from a short pilot are noisy.
ESS_MARGIN = 1.5


def _log_density_where_computable(target: Target, values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """``target.log_density`` of a batch of draws, -inf (weight zero) for the draws where it
    cannot be computed, and how many those were. Far out in a Student-t's tail a factorisation
    can fail in float64 (a Cholesky of a covariance whose smallest eigenvalue has underflowed)
    where the density has underflowed anyway; a failing batch is bisected so that one such
    draw does not take the other 9,999 with it."""
    try:
        log_density = target.log_density(values)
    except (torch.linalg.LinAlgError, ValueError):
        size = len(next(iter(values.values())))
        if size == 1:
            return torch.full((1,), -math.inf, dtype=torch.float64), 1
        halves = [_log_density_where_computable(target, {s: v[part] for s, v in values.items()})
                  for part in (slice(0, size // 2), slice(size // 2, size))]
        return torch.cat([h[0] for h in halves]), sum(h[1] for h in halves)
    failed = torch.isnan(log_density)
    return log_density.masked_fill(failed, -math.inf), int(failed.sum())


def _evidence(target: Target, draws: dict[str, torch.Tensor], num_particles: int,
              inflation: float) -> tuple[float, float, float, int]:
    """log p(x) by importance sampling from a Student-t fitted to the unconstrained draws,
    its scale inflated by ``inflation``; returns (estimate, standard error, k̂, how many
    particles' density could not be computed and got weight zero)."""
    space = FlatPotential(target)
    flat = torch.cat([space.constrain[s].inv(draws[s]).reshape(len(draws[s]), -1) for s in space.shapes], -1)
    mean, cov = flat.mean(0), torch.cov(flat.T).reshape(flat.shape[1], flat.shape[1])
    proposal = dist.MultivariateStudentT(PROPOSAL_DF, mean, inflation * torch.linalg.cholesky(cov))
    log_weights, uncomputable = [], 0
    for start in range(0, num_particles, 10_000):
        u = proposal.sample((min(10_000, num_particles - start),))
        pieces = space.unflatten(u)
        values = {s: transform(pieces[s]) for s, transform in space.constrain.items()}
        log_det = sum(transform.log_abs_det_jacobian(pieces[s], values[s]).reshape(len(u), -1).sum(-1)
                      for s, transform in space.constrain.items())
        log_density, failed = _log_density_where_computable(target, values)
        uncomputable += failed
        log_weights.append(log_density + log_det - proposal.log_prob(u))
    log_weights = torch.cat(log_weights)
    estimate, se = log_mean_exp(log_weights)
    return estimate, se, psis_khat(log_weights), uncomputable


@dataclass(frozen=True)
class Mode:
    """A local maximum of the posterior density in Pyro's unconstrained coordinates.

    ``location`` and ``covariance`` (the inverse Hessian of the potential there, ``None``
    where it is not positive definite) are flat over ``target.continuous_sites``;
    ``log_mass`` is the Laplace approximation of the mode's log posterior mass up to a
    constant shared by all modes (``nan`` without a covariance); ``starts`` counts the
    optimisations that ended in it."""

    location: torch.Tensor
    potential: float
    covariance: torch.Tensor | None
    log_mass: float
    starts: int


def _optimise(potential: FlatPotential, start: torch.Tensor) -> torch.Tensor | None:
    """L-BFGS from ``start``; the optimum, or ``None`` if it did not converge."""
    x = start.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([x], max_iter=2_000, tolerance_grad=1e-7, tolerance_change=1e-12,
                                  history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = potential(x)
        value.backward()
        return value

    try:
        optimiser.step(closure)
    except (ValueError, RuntimeError):  # a non-finite density along the way
        return None
    x.grad = None
    (gradient,) = torch.autograd.grad(potential(x), x)
    return x.detach() if bool(torch.isfinite(gradient).all()) and float(gradient.abs().max()) < 1e-3 else None


def find_modes(problem: Target, num_starts: int = MODE_SEARCH_STARTS) -> tuple[list[Mode], dict[str, int]]:
    """The posterior's modes found by L-BFGS from ``num_starts`` uniform(-2, 2) starts (the
    support of Pyro's ``init_to_uniform``), heaviest Laplace mass first, and a summary
    ``{"starts", "converged", "grad_evals"}``. Two optima are one mode when they are within
    one unit of Mahalanobis distance under the first one's covariance (within 1e-3 in
    Euclidean distance where it has none), so symmetric copies of a mode stay separate."""
    potential = FlatPotential(problem)
    modes: list[Mode] = []
    converged = 0
    for _ in range(num_starts):
        optimum = _optimise(potential, 4 * torch.rand(potential.dim, dtype=torch.float64) - 2)
        if optimum is None:
            continue
        converged += 1
        for i, mode in enumerate(modes):
            delta = optimum - mode.location
            if mode.covariance is not None:
                same = float(delta @ torch.linalg.solve(mode.covariance, delta)) < 1.0
            else:
                same = float(delta.norm()) < 1e-3
            if same:
                modes[i] = replace(mode, starts=mode.starts + 1)
                break
        else:
            value = float(potential(optimum))
            hessian = torch.autograd.functional.hessian(potential, optimum)
            hessian = (hessian + hessian.T) / 2
            if bool(torch.isfinite(hessian).all()) and float(torch.linalg.eigvalsh(hessian).min()) > 0:
                covariance = torch.linalg.inv(hessian)
                log_mass = -value + 0.5 * float(torch.linalg.slogdet(covariance)[1])
            else:
                covariance, log_mass = None, float("nan")
            modes.append(Mode(optimum, value, covariance, log_mass, 1))
    modes.sort(key=lambda m: -m.log_mass if m.covariance is not None else math.inf)
    return modes, {"starts": num_starts, "converged": converged, "grad_evals": potential.counted.grad_evals}


def _draws_per_chain_for(ess_per_draw: float, num_chains: int) -> int:
    """Draws per chain for ``ESS_MARGIN`` times the ESS gate at the given ESS per draw."""
    return math.ceil(ESS_MARGIN * GATES["ess_min"] / (max(ess_per_draw, 1e-6) * num_chains))


def _by_chain(problem: Target, draws: dict[str, torch.Tensor], num_chains: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each quantity of interest of chained ``draws`` as (chains, draws per chain, ...) in
    float64, with its ESS."""
    out = {}
    for name, values in problem.quantities(draws).items():
        grouped = values.reshape(num_chains, -1, *values.shape[1:]).to(torch.float64)
        out[name] = (grouped, effective_sample_size(grouped))
    return out


def _modes_of(problem: Target, directory: Path) -> tuple[list[Mode], dict]:
    """The mode search, run once per build directory: a resumed build keeps the mode its
    chains started from."""
    path = directory / "modes.pt"
    if path.exists():
        saved = torch.load(path)
        return [Mode(**mode) for mode in saved["modes"]], saved["summary"]
    modes, summary = find_modes(problem)
    save_atomically({"modes": [asdict(m) for m in modes], "summary": summary}, path)
    return modes, summary


def build_reference(model: ZooModel, data: torch.Tensor, target: str = "posterior", *, num_chains: int = 4,
                    draws_per_chain: int | None = None, num_warmup: int = 1_000, num_particles: int = 200_000,
                    seed: int = 0, enforce_gates: bool = True, command: str = "", build_dir: Path | None = None,
                    jobs: int = 1, verbose: bool = False) -> Reference:
    """A gold-standard reference for ``target``; raises :class:`GoldStandardError` if a gate fails
    (pass ``enforce_gates=False`` for quick, ungated recomputations in tests).

    The chains are saved piece by piece in ``build_dir`` (a temporary directory if ``None``;
    see :mod:`inference_comparisons.reference_chains`): rerunning with the same directory
    resumes an interrupted build or extends a refused one. ``jobs`` worker processes run
    the chains. Without ``draws_per_chain``, every chain's first segment is a pilot that
    measures the ESS per draw, and the chains are then extended to ``ESS_MARGIN`` times what
    the ESS gate needs."""
    if draws_per_chain is not None:
        check_integer(model.name, "draws_per_chain", draws_per_chain, 1, 10**7)
    check_integer(model.name, "seed", seed, 0, 2**32 - 1)
    problem = model.target(data, target)
    if problem.amortised_guide is not None:
        # Every latent is local: per-datapoint importance sampling (NUTS only cross-checks).
        return build_amortised_reference(model, data, target, seed=seed, enforce_gates=enforce_gates,
                                         command=command)
    check_integer(model.name, "jobs", jobs, 1, 256)  # run_chains checks too, but only after the mode search
    with tempfile.TemporaryDirectory() if build_dir is None else contextlib.nullcontext(build_dir) as directory:
        return _build_from_chains(model, data, target, problem, Path(directory), num_chains=num_chains,
                                  draws_per_chain=draws_per_chain, num_warmup=num_warmup,
                                  num_particles=num_particles, seed=seed, enforce_gates=enforce_gates,
                                  command=command, jobs=jobs, verbose=verbose)


def _build_from_chains(model: ZooModel, data: torch.Tensor, target: str, problem: Target, directory: Path, *,
                       num_chains: int, draws_per_chain: int | None, num_warmup: int, num_particles: int,
                       seed: int, enforce_gates: bool, command: str, jobs: int, verbose: bool) -> Reference:
    open_build_directory(directory, {
        "model": model.name, "config": model.config(), "target": target, "data": data_fingerprint(data),
        "seed": seed, "num_warmup": num_warmup, "segment_draws": SEGMENT_DRAWS,
        "mode_search_starts": MODE_SEARCH_STARTS})
    prepare_cell(seed)
    start = time.perf_counter()
    modes, mode_search = _modes_of(problem, directory)
    if not modes or modes[0].covariance is None:
        raise GoldStandardError(f"{model.name}/{target}: L-BFGS found no mode with a positive-definite Hessian "
                                f"({mode_search})")
    relative = [m.log_mass - modes[0].log_mass for m in modes[1:]]
    # A mode whose mass cannot be approximated (no positive-definite Hessian) is not negligible.
    other_mode_mass = max((math.inf if math.isnan(r) else math.exp(r) for r in relative), default=0.0)
    mode_search = {**mode_search, "modes": [{"potential": round(m.potential, 4), "starts": m.starts,
                                             "log_mass_relative": None if math.isnan(r) else round(r, 3)}
                                            for m, r in zip(modes, [0.0] + relative)]}
    if enforce_gates and not other_mode_mass < GATES["other_mode_mass_max"]:
        raise GoldStandardError(f"{model.name}/{target}: the posterior has modes the chains would not cross "
                                f"between (relative Laplace mass {other_mode_mass:.3g} >= "
                                f"{GATES['other_mode_mass_max']}): {mode_search}")

    def chains(per_chain: int):
        return run_chains(model, data, target, modes[0].location, modes[0].covariance, directory=directory,
                          num_chains=num_chains, draws_per_chain=per_chain, num_warmup=num_warmup, seed=seed,
                          jobs=jobs, verbose=verbose)

    pilot = None
    if draws_per_chain is None:
        first = chains(SEGMENT_DRAWS)
        ess_min = min(float(ess.min()) for _, ess in _by_chain(problem, first.draws, num_chains).values())
        rate = max(ess_min, 1.0) / (num_chains * SEGMENT_DRAWS)
        draws_per_chain = max(min(_draws_per_chain_for(rate, num_chains), 50_000), SEGMENT_DRAWS)
        pilot = {"draws_per_chain": SEGMENT_DRAWS, "ess_per_draw": rate}
    result = chains(draws_per_chain)
    moments, ess_all, rhat_all = {}, [], []
    for name, (grouped, ess) in _by_chain(problem, result.draws, num_chains).items():
        values = grouped.flatten(0, 1)
        rhat = split_gelman_rubin(grouped, chain_dim=0, sample_dim=1)
        sd = values.std(0)
        moments[name] = Moments(values.mean(0), sd, sd / ess.sqrt())
        ess_all.append(ess.reshape(-1))
        rhat_all.append(rhat.reshape(-1))
    attempts = []
    for inflation in PROPOSAL_INFLATIONS:
        log_evidence, log_evidence_se, khat, uncomputable = _evidence(problem, result.draws, num_particles, inflation)
        attempts.append({"inflation": inflation, "log_evidence": log_evidence, "se": log_evidence_se, "khat": khat,
                         "uncomputable": uncomputable})
        if khat < GATES["khat_max"]:
            break
    diagnostics = {
        "rhat_max": float(torch.cat(rhat_all).max()), "ess_min": float(torch.cat(ess_all).min()),
        "divergences": result.divergences, "khat": khat,
        "grad_evals": result.grad_evals, "chain_wall_s": round(result.wall_s, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "pilot": pilot, "evidence_attempts": attempts, "uncomputable": uncomputable,
        "other_mode_mass": other_mode_mass,
        "mode_search": mode_search,
    }
    failed = [f"{key}={diagnostics[key]:.4g}" for key, ok in (
        ("rhat_max", diagnostics["rhat_max"] < GATES["rhat_max"]),
        ("ess_min", diagnostics["ess_min"] > GATES["ess_min"]),
        ("divergences", diagnostics["divergences"] <= GATES["divergences"]),
        ("khat", khat < GATES["khat_max"]),
        ("uncomputable", uncomputable <= GATES["uncomputable_max"] * num_particles),
        ("other_mode_mass", other_mode_mass < GATES["other_mode_mass_max"])) if not ok]
    if enforce_gates and failed:
        hint = ""
        if diagnostics["ess_min"] <= GATES["ess_min"]:
            # A short pilot misses rare, slow excursions (factor analysis' Heywood tails:
            # it planned for 4x the ESS per draw the main run then had).
            rate = diagnostics["ess_min"] / (num_chains * draws_per_chain)
            hint = (f"; the ESS per draw was {rate:.3g}, so about {_draws_per_chain_for(rate, num_chains)} draws "
                    f"per chain would pass (--draws-per-chain; the same build directory extends these chains)")
        raise GoldStandardError(f"{model.name}/{target}: reference failed gates {GATES}: {', '.join(failed)}{hint}")
    return Reference(
        log_evidence=log_evidence, log_evidence_se=log_evidence_se, exact=False, moments=moments,
        local_marginals=summarise_draws(problem, result.draws)[1],
        provenance={
            "method": (f"NUTS {num_chains} chains x {draws_per_chain} draws ({num_warmup} warm-up, dense mass "
                       f"matrix, then the adapted kernel fixed, in saved segments of {SEGMENT_DRAWS} draws), "
                       f"started at draws from the Laplace approximation of the heaviest of the modes "
                       f"L-BFGS found from {mode_search['starts']} random starts, for moments; "
                       f"importance sampling with {num_particles} particles from a Student-t(df={PROPOSAL_DF}) "
                       f"fitted to the unconstrained draws, scale inflated by {attempts[-1]['inflation']}, "
                       f"for the log evidence"),
            "command": command, "seed": seed, "model": model.name, "config": model.config(),
            "num_datapoints": int(data.shape[0]), "gates": GATES, "diagnostics": diagnostics,
            "versions": {"torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()},
            "created": datetime.date.today().isoformat(),
        },
    )


def write_reference(model: ZooModel, data: torch.Tensor, target: str, reference: Reference) -> str:
    path = references.path_for(model, target, model.validate(data))
    path.write_text(json.dumps(references.to_json(reference), indent=1) + "\n")
    return str(path)


# --- targets with an amortised guide (the VAE): per-datapoint references ------------------
#: Particles per data point of the amortised references' two evidence estimators.
AMORTISED_PARTICLES = 100_000
#: Mixture weights of the defensive proposal: the encoder, a Student-t(2) at the encoder's
#: location with twice its scale, and the model's prior (Hesterberg 1995): the prior
#: component bounds every weight by p(x_n | z) / 0.1, the t component covers an encoder
#: that is too narrow, and the encoder component keeps most particles where it puts them.
DEFENSIVE_WEIGHTS = (0.45, 0.45, 0.1)


class DefensiveMixture(dist.TorchDistribution):
    """A mixture of distributions over the same (batch, event) shape, with fixed weights."""

    arg_constraints: dict = {}
    support = dist.constraints.real_vector

    def __init__(self, components: list[dist.Distribution], weights: tuple[float, ...]) -> None:
        self.components = components
        self.log_mix = torch.tensor(weights, dtype=torch.float64).log()
        first = components[0]
        super().__init__(first.batch_shape, first.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):  # noqa: D102 - as torch's
        batch_shape = torch.Size(batch_shape)
        return DefensiveMixture([c.expand(batch_shape) for c in self.components], tuple(self.log_mix.exp().tolist()))

    def sample(self, sample_shape=torch.Size()):
        draws = torch.stack([c.sample(sample_shape) for c in self.components])  # (C, *shape, *event)
        choice = dist.Categorical(logits=self.log_mix).sample(torch.Size(sample_shape) + self.batch_shape)
        index = choice.reshape((1,) + choice.shape + (1,) * len(self.event_shape)).expand((1,) + draws.shape[1:])
        return draws.gather(0, index)[0]

    def log_prob(self, value):
        parts = torch.stack([c.log_prob(value) for c in self.components], dim=-1)
        return (parts + self.log_mix).logsumexp(-1)


def _plated_guide(proposals: dict[str, tuple[list, dist.Distribution]]) -> Callable[[], None]:
    def guide() -> None:
        for s, (frames, proposal) in proposals.items():
            with contextlib.ExitStack() as stack:
                for name, size, dim in frames:
                    stack.enter_context(pyro.plate(name, size, dim=dim))
                pyro.sample(s, proposal)
    return guide


def _defensive_proposal(problem: Target) -> tuple[Callable[[], None], dict[str, list]]:
    """The defensive mixture built on the amortised guide, as a guide over its plates."""
    assert problem.amortised_guide is not None
    with torch.no_grad():
        guide_trace = poutine.trace(problem.amortised_guide).get_trace()
        model_trace = poutine.trace(problem.model).get_trace()
    proposals, frames_of = {}, {}
    for s in problem.latent_sites:
        site = guide_trace.nodes[s]
        frames = [(f.name, f.size, f.dim) for f in site["cond_indep_stack"]]
        q, event_dim = site["fn"], site["fn"].event_dim
        base = q
        while isinstance(base, dist.Independent):
            base = base.base_dist
        loc, scale = base.mean.detach(), base.stddev.detach()
        prior = model_trace.nodes[s]["fn"]
        proposals[s] = (frames, DefensiveMixture(
            [q, dist.StudentT(2.0, loc, 2 * scale).to_event(event_dim), prior.expand(q.batch_shape)],
            DEFENSIVE_WEIGHTS))
        frames_of[s] = (frames, event_dim)
    return _plated_guide(proposals), frames_of


def build_amortised_reference(model: ZooModel, data: torch.Tensor, target: str = "latent", *,
                              num_chains: int = 4, draws_per_chain: int = 1_000, num_warmup: int = 500,
                              num_particles: int = AMORTISED_PARTICLES, num_moment_particles: int = 20_000,
                              seed: int = 0, enforce_gates: bool = True, command: str = "") -> Reference:
    """Reference for a target whose latents are all local, with an amortised guide (DESIGN.md §6).

    log p(x_n): importance sampling per data point with ``num_particles`` draws from a
    defensive mixture built on the encoder (:data:`DEFENSIVE_WEIGHTS`), with standard error
    and k̂ per data point. Moments: the same proposal, self-normalised per data point with
    ``num_moment_particles`` fresh draws (se = sd / sqrt(ESS of the weights)). Per-datapoint
    posteriors of a nonlinear decoder can be multimodal (the curve folds), which NUTS does not
    cross between, so NUTS (all data points' latents at once: the posterior factorises) is
    a recorded cross-check of the moments on the coordinates where its chains agree
    (R-hat < 1.01), not their source. Second, independent evidence estimator: importance
    sampling from a Student-t(df=5) per data point with the reference's posterior mean and sd.
    """
    from inference_comparisons.methods.amortised import (per_datapoint_khat, per_datapoint_log_mean_exp,
                                                         per_datapoint_log_weights)

    problem = model.target(data, target)
    prepare_cell(seed)
    start = time.perf_counter()
    proposal, frames_of = _defensive_proposal(problem)
    sites, nesting = problem.latent_sites, problem.max_plate_nesting
    log_weights, _ = per_datapoint_log_weights(problem.model, proposal, num_particles, nesting, sites,
                                               keep_draws=False)
    estimate, se = per_datapoint_log_mean_exp(log_weights)
    khat = per_datapoint_khat(log_weights)
    log_weights, draws = per_datapoint_log_weights(problem.model, proposal, num_moment_particles, nesting, sites)
    weights = (log_weights - log_weights.logsumexp(0)).exp()  # (K, N)
    ess_is = 1.0 / weights.pow(2).sum(0)
    moments = {}
    for name, values in problem.quantities(draws).items():
        w = weights.reshape(weights.shape + (1,) * (values.dim() - 2))
        mean = (w * values).sum(0)
        sd = (w * (values - mean) ** 2).sum(0).sqrt()
        moments[name] = Moments(mean, sd, sd / ess_is.reshape(ess_is.shape + (1,) * (values.dim() - 2)).sqrt())
    # Independent evidence estimator: a Student-t per data point at the posterior mean and sd.
    fitted = {s: (frames_of[s][0], dist.StudentT(PROPOSAL_DF, moments[s].mean, moments[s].sd.clamp_min(1e-6))
                  .to_event(frames_of[s][1])) for s in sites}
    check_weights, _ = per_datapoint_log_weights(problem.model, _plated_guide(fitted), num_particles, nesting, sites,
                                                 keep_draws=False)
    check, check_se = per_datapoint_log_mean_exp(check_weights)
    check_khat = per_datapoint_khat(check_weights)
    total, total_se = float(estimate.sum()), float(se.pow(2).sum().sqrt())
    check_total, check_total_se = float(check.sum()), float(check_se.pow(2).sum().sqrt())
    per_point_z = (estimate - check) / (se ** 2 + check_se ** 2).sqrt()
    is_seconds = time.perf_counter() - start
    # NUTS cross-check of the moments (skipped with num_chains=0, for quick recomputations).
    nuts = NUTS(num_chains=num_chains, num_warmup=num_warmup).run(problem, num_chains * draws_per_chain, seed) \
        if num_chains > 0 else None
    nuts_check = {}
    for name, (grouped, ess) in (_by_chain(problem, nuts.draws, num_chains).items() if nuts is not None else ()):
        values = grouped.flatten(0, 1)
        rhat = split_gelman_rubin(grouped, chain_dim=0, sample_dim=1)
        mixed = rhat < 1.01
        error = (values.mean(0) - moments[name].mean).abs() / (
            moments[name].se ** 2 + values.std(0) ** 2 / ess).sqrt()
        nuts_check[name] = {"fraction_mixed": float(mixed.double().mean()),
                            "max_abs_z_mixed": float(error[mixed].max()) if mixed.any() else float("nan"),
                            "ess_min_mixed": float(ess[mixed].min()) if mixed.any() else float("nan")}
    diagnostics = {
        "khat": float(khat.max()), "khat_cross_check": float(check_khat.max()),
        "ess_min": float(ess_is.min()),
        "cross_check_z": (total - check_total) / math.hypot(total_se, check_total_se),
        "cross_check_max_abs_z_per_datapoint": float(per_point_z.abs().max()),
        "nuts_cross_check": nuts_check,
        "nuts_divergences": int(nuts.diagnostics["divergences"]) if nuts is not None else 0,
        "nuts_grad_evals": nuts.cost.grad_evals if nuts is not None else 0, "importance_wall_s": round(is_seconds, 1),
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
