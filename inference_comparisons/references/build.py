"""Building gold-standard references where no exact answer exists.

Posterior moments come from long chains of ChEES-HMC (many chains in lockstep) or of NUTS
that must pass posteriordb's gates (R-hat < 1.01, ESS > 10,000 on every quantity of
interest, no divergences; :mod:`.gates`).
The chains are saved piece by piece as they run (:mod:`.chains`), so a build of hours can be
resumed, extended and spread over worker processes. Before any chain runs, the mode search
(:mod:`.modes`) looks for the posterior's modes: the chains start at draws from the Laplace
approximation of the heaviest one, and every other mode found must carry a negligible
Laplace mass. The log evidence comes from importance sampling with a Student-t proposal
fitted to the draws (:mod:`.evidence`), and must pass k̂ < 0.5. Targets with an amortised
guide get per-datapoint references instead (:mod:`.amortised`). Everything, including the
command that rebuilds it, is recorded in the reference's provenance.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import pyro
import torch

import zoo.references as stored
from zoo.base import Moments, Reference, Target, ZooModel
from zoo.validation import check_integer

from inference_comparisons.estimators.hmc import convergence
from inference_comparisons.estimators.modes import MODE_SEARCH_STARTS
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.state import prepare_cell
from inference_comparisons.references.amortised import build_amortised_reference
from inference_comparisons.references.chains import (CHEES_GROUPS, SAMPLERS, SEGMENT_DRAWS, default_num_chains,
                                                      open_build_directory, run_saved_chains)
from inference_comparisons.references.evidence import PROPOSAL_DF, PROPOSAL_INFLATIONS, student_t_evidence
from inference_comparisons.references.gates import GATES, GoldStandardError
from inference_comparisons.references.modes import modes_of

__all__ = ["ESS_MARGIN", "build_reference", "chain_moments", "write_reference"]

#: Safety factor on the draws a pilot (every chain's first segment) says the ESS gate needs:
#: ESS estimates from a short pilot are noisy.
ESS_MARGIN = 1.5


#: How the provenance names each sampler.
_SAMPLER_WORDS = {"chees": f"ChEES-HMC (diagonal mass), in {CHEES_GROUPS} independently adapted groups of chains in "
                           f"lockstep",
                  "nuts": "NUTS (dense mass matrix), one chain a process"}


def _draws_per_chain_for(ess_per_draw: float, num_chains: int) -> int:
    """Draws per chain for ``ESS_MARGIN`` times the ESS gate at the given ESS per draw."""
    return math.ceil(ESS_MARGIN * GATES["ess_min"] / (max(ess_per_draw, 1e-6) * num_chains))


def chain_moments(problem: Target, draws: dict[str, torch.Tensor], num_chains: int
                   ) -> tuple[dict[str, Moments], float, float]:
    """Moments of each quantity of interest (se = sd / sqrt(ESS)), the smallest ESS and the
    largest split R-hat over every coordinate."""
    moments, ess_all, rhat_all = {}, [], []
    for name, values in problem.quantities(draws).items():
        grouped, ess, rhat = convergence(values, num_chains)
        values = grouped.flatten(0, 1)
        sd = values.std(0)
        moments[name] = Moments(values.mean(0), sd, sd / ess.sqrt())
        ess_all.append(ess.reshape(-1))
        rhat_all.append(rhat.reshape(-1))
    return moments, float(torch.cat(ess_all).min()), float(torch.cat(rhat_all).max())


def build_reference(model: ZooModel, data: torch.Tensor, target: str = "posterior", *, sampler: str = SAMPLERS[0],
                    num_chains: int | None = None, compile: bool = False,
                    draws_per_chain: int | None = None, num_warmup: int = 1_000, num_particles: int = 200_000,
                    seed: int = 0, enforce_gates: bool = True, command: str = "", build_dir: Path | None = None,
                    jobs: int = 1, verbose: bool = False) -> Reference:
    """A gold-standard reference for ``target``; raises :class:`GoldStandardError` if a gate fails
    (pass ``enforce_gates=False`` for quick, ungated recomputations in tests).

    The chains are saved piece by piece in ``build_dir`` (a temporary directory if ``None``;
    see :mod:`inference_comparisons.references.chains`): rerunning with the same directory
    resumes an interrupted build or extends a refused one. ``jobs`` worker processes run
    the chains. Without ``draws_per_chain``, every chain's first segment is a pilot that
    measures the ESS per draw, and the chains are then extended to ``ESS_MARGIN`` times what
    the ESS gate needs. ``sampler`` is ``"chees"`` (the default) or ``"nuts"``, and
    ``num_chains`` defaults to the sampler's own (:func:`.chains.default_num_chains`);
    ``compile`` runs ChEES's potential through ``torch.compile`` (a long build's few tens of
    seconds of compilation buy a gradient about 2.3x cheaper)."""
    num_chains = default_num_chains(sampler) if num_chains is None else num_chains  # checks the sampler too
    if draws_per_chain is not None:
        check_integer(model.name, "draws_per_chain", draws_per_chain, 1, 10**7)
    check_integer(model.name, "seed", seed, 0, 2**32 - 1)
    problem = model.target(data, target)
    if problem.has_amortised_guide:
        # Every latent is local: per-datapoint importance sampling (NUTS only cross-checks).
        return build_amortised_reference(model, data, target, seed=seed, enforce_gates=enforce_gates,
                                         command=command)
    check_integer(model.name, "jobs", jobs, 1, 256)  # run_saved_chains checks too, but only after the mode search
    with tempfile.TemporaryDirectory() if build_dir is None else contextlib.nullcontext(build_dir) as directory:
        return _build_from_chains(model, data, target, problem, Path(directory), sampler=sampler, compile=compile,
                                  num_chains=num_chains,
                                  draws_per_chain=draws_per_chain, num_warmup=num_warmup,
                                  num_particles=num_particles, seed=seed, enforce_gates=enforce_gates,
                                  command=command, jobs=jobs, verbose=verbose)


def _checked_modes(problem: Target, directory: Path, where: str, enforce_gates: bool
                   ) -> tuple[list, dict, float]:
    """The mode search (saved in the build directory), its summary, and the largest relative
    Laplace mass of a mode other than the heaviest; a posterior whose other modes matter is
    refused before any chain runs."""
    modes, mode_search = modes_of(problem, directory)
    if not modes or modes[0].covariance is None:
        raise GoldStandardError(f"{where}: L-BFGS found no mode with a positive-definite Hessian ({mode_search})")
    relative = [m.log_mass - modes[0].log_mass for m in modes[1:]]
    # A mode whose mass cannot be approximated (no positive-definite Hessian) is not negligible.
    other_mode_mass = max((math.inf if math.isnan(r) else math.exp(r) for r in relative), default=0.0)
    mode_search = {**mode_search, "modes": [{"potential": round(m.potential, 4), "starts": m.starts,
                                             "log_mass_relative": None if math.isnan(r) else round(r, 3)}
                                            for m, r in zip(modes, [0.0] + relative)]}
    if enforce_gates and not other_mode_mass < GATES["other_mode_mass_max"]:
        raise GoldStandardError(f"{where}: the posterior has modes the chains would not cross between (relative "
                                f"Laplace mass {other_mode_mass:.3g} >= {GATES['other_mode_mass_max']}): {mode_search}")
    return modes, mode_search, other_mode_mass


def _evidence(problem: Target, draws: dict[str, torch.Tensor], num_particles: int) -> list[dict]:
    """Student-t importance sampling at each scale inflation in turn, until k̂ passes; every
    attempt, the last one being the estimate."""
    attempts = []
    for inflation in PROPOSAL_INFLATIONS:
        log_evidence, se, khat, uncomputable = student_t_evidence(problem, draws, num_particles, inflation)
        attempts.append({"inflation": inflation, "log_evidence": log_evidence, "se": se, "khat": khat,
                         "uncomputable": uncomputable})
        if khat < GATES["khat_max"]:
            break
    return attempts


def _refuse_failed_gates(diagnostics: dict, num_particles: int, num_chains: int, draws_per_chain: int,
                         where: str) -> None:
    failed = [f"{key}={diagnostics[key]:.4g}" for key, ok in (
        ("rhat_max", diagnostics["rhat_max"] < GATES["rhat_max"]),
        ("ess_min", diagnostics["ess_min"] > GATES["ess_min"]),
        ("divergences", diagnostics["divergences"] <= GATES["divergences"]),
        ("khat", diagnostics["khat"] < GATES["khat_max"]),
        ("uncomputable", diagnostics["uncomputable"] <= GATES["uncomputable_max"] * num_particles),
        ("other_mode_mass", diagnostics["other_mode_mass"] < GATES["other_mode_mass_max"])) if not ok]
    if not failed:
        return
    hint = ""
    if diagnostics["ess_min"] <= GATES["ess_min"]:
        # A short pilot misses rare, slow excursions (factor analysis' Heywood tails: it
        # planned for 4x the ESS per draw the main run then had).
        rate = diagnostics["ess_min"] / (num_chains * draws_per_chain)
        hint = (f"; the ESS per draw was {rate:.3g}, so about {_draws_per_chain_for(rate, num_chains)} draws "
                f"per chain would pass (--draws-per-chain; the same build directory extends these chains)")
    raise GoldStandardError(f"{where}: reference failed gates {GATES}: {', '.join(failed)}{hint}")


def _build_from_chains(model: ZooModel, data: torch.Tensor, target: str, problem: Target, directory: Path, *,
                       sampler: str, compile: bool, num_chains: int, draws_per_chain: int | None, num_warmup: int,
                       num_particles: int,
                       seed: int, enforce_gates: bool, command: str, jobs: int, verbose: bool) -> Reference:
    where = f"{model.name}/{target}"
    open_build_directory(directory, {
        "model": model.name, "key": model.reference_key(target), "target": target,
        "data": stored.data_fingerprint(data), "seed": seed, "num_warmup": num_warmup, "sampler": sampler,
        "num_chains": num_chains,
        "segment_draws": SEGMENT_DRAWS, "mode_search_starts": MODE_SEARCH_STARTS})
    prepare_cell(seed)
    start = time.perf_counter()
    modes, mode_search, other_mode_mass = _checked_modes(problem, directory, where, enforce_gates)

    def chains(per_chain: int):
        return run_saved_chains(model, data, target, modes[0].location, modes[0].covariance, directory=directory,
                                num_chains=num_chains, draws_per_chain=per_chain, num_warmup=num_warmup, seed=seed,
                                sampler=sampler, compile=compile, jobs=jobs, verbose=verbose)

    pilot = None
    if draws_per_chain is None:
        _, ess_min, _ = chain_moments(problem, chains(SEGMENT_DRAWS).draws, num_chains)
        rate = max(ess_min, 1.0) / (num_chains * SEGMENT_DRAWS)
        draws_per_chain = max(min(_draws_per_chain_for(rate, num_chains), 50_000), SEGMENT_DRAWS)
        pilot = {"draws_per_chain": SEGMENT_DRAWS, "ess_per_draw": rate}
    result = chains(draws_per_chain)
    moments, ess_min, rhat_max = chain_moments(problem, result.draws, num_chains)
    attempts = _evidence(problem, result.draws, num_particles)
    diagnostics = {
        "rhat_max": rhat_max, "ess_min": ess_min, "divergences": result.divergences, "khat": attempts[-1]["khat"],
        "grad_evals": result.grad_evals, "chain_wall_s": round(result.wall_s, 1),
        "compiled": compile and not result.eager_because, "eager_because": list(result.eager_because),
        "wall_s": round(time.perf_counter() - start, 1),
        "pilot": pilot, "evidence_attempts": attempts, "uncomputable": attempts[-1]["uncomputable"],
        "other_mode_mass": other_mode_mass,
        "mode_search": mode_search,
    }
    if enforce_gates:
        _refuse_failed_gates(diagnostics, num_particles, num_chains, draws_per_chain, where)
    return Reference(
        log_evidence=attempts[-1]["log_evidence"], log_evidence_se=attempts[-1]["se"], exact=False, moments=moments,
        local_marginals=summarise_draws(problem, result.draws)[1],
        provenance={
            "method": (f"{_SAMPLER_WORDS[sampler]}: {num_chains} chains x {draws_per_chain} draws ({num_warmup} "
                       f"warm-up, then the adapted kernel fixed, in saved segments of {SEGMENT_DRAWS} draws), "
                       f"started at draws from the Laplace approximation of the heaviest of the modes "
                       f"L-BFGS found from {mode_search['starts']} random starts, for moments; "
                       f"importance sampling with {num_particles} particles from a Student-t(df={PROPOSAL_DF}) "
                       f"fitted to the unconstrained draws, scale inflated by {attempts[-1]['inflation']}, "
                       f"for the log evidence"),
            "sampler": sampler, "command": command, "seed": seed, "model": model.name, "config": model.config(),
            "num_datapoints": int(data.shape[0]), "gates": GATES, "diagnostics": diagnostics,
            "versions": {"torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()},
            "created": datetime.date.today().isoformat(),
        },
    )


def write_reference(model: ZooModel, data: torch.Tensor, target: str, reference: Reference,
                    dataset: str = "simulated") -> Path:
    """Store ``reference`` in ``zoo/references`` under a readable name, with the identity it is
    found by (:mod:`zoo.references`), and its source's suffix for one imported from outside
    (:mod:`.posteriordb`); returns the path."""
    data = model.validate(data)
    source = stored.source_of({"provenance": reference.provenance})
    path = stored.DIRECTORY / stored.file_name(model, target, data, dataset, source)
    path.write_text(json.dumps(stored.to_json(reference, stored.identity(model, target, data)), indent=1) + "\n")
    return path
