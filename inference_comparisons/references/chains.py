"""Long chains for gold-standard builds, run in pieces saved to disk.

A reference can need hours of chains: factor analysis' posterior, whose noise variances
make rare, slow excursions into Heywood tails, needed about 200,000 NUTS iterations. Run
as one call, that work is lost to any interruption, and a build refused on ESS starts
again from nothing. Here the chains run in *units*, each a warm-up, which adapts the
kernel and is saved with it, then segments of :data:`SEGMENT_DRAWS` draws per chain with
that kernel fixed, each saved as it finishes. Two samplers (:data:`SAMPLERS`):

- ``"chees"`` (the default): ChEES-HMC (:mod:`inference_comparisons.estimators.chees`),
  :data:`CHEES_GROUPS` units of many chains in lockstep, each unit adapting its own
  step size, trajectory length and diagonal mass across its chains;
- ``"nuts"``: Pyro's NUTS with a dense mass matrix, one chain a unit.

So

- an interrupted build resumes at the last finished segment of each unit;
- a build refused on ESS, rerun with more draws per chain, extends its chains;
- units run in parallel worker processes (``jobs``).

Every piece is seeded by (seed, unit, piece) alone, and a transition with a fixed kernel
depends only on the current state and its random numbers, so the first n draws of a chain
are the same however the build was split into runs and processes (in the last bits, only
if each run compiled the potential or each did not: compiled arithmetic rounds otherwise).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import NUTS as PyroNUTS

from zoo.base import ZooModel
from zoo.validation import check_integer

from inference_comparisons.estimators.chees import ChEESKernel, chees_warmup, run_fixed_kernel
from inference_comparisons.estimators.potential import CountingPotential, FlatPotential
from inference_comparisons.references.gates import GoldStandardError

__all__ = ["CHEES_GROUPS", "SAMPLERS", "SEGMENT_DRAWS", "ChainDraws", "default_num_chains", "open_build_directory",
           "run_saved_chains", "save_atomically"]

#: Draws per chain per saved segment: a few minutes on the slowest reference, so an
#: interruption costs little.
SEGMENT_DRAWS = 500

#: The builders' samplers, the default first.
SAMPLERS = ("chees", "nuts")

#: ChEES's chains run as this many independently adapted groups: the split R-hat then also
#: compares kernels adapted apart, and ``jobs`` processes can run the groups side by side.
CHEES_GROUPS = 4


def default_num_chains(sampler: str) -> int:
    """Chains of a build: 64 for ChEES (16 a group, enough for its adaptation's statistics
    across chains, and one batched gradient still costs little more than one chain's), 4
    for NUTS (each chain its own process-long run)."""
    return {"chees": 16 * CHEES_GROUPS, "nuts": 4}[_checked_sampler(sampler)]


def _checked_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown reference sampler {sampler!r}; accepted: {', '.join(SAMPLERS)}")
    return sampler


@dataclass(frozen=True)
class ChainDraws:
    """The first ``draws_per_chain`` draws of each chain, chains concatenated in order
    (constrained values, one tensor per site), with their divergences, the gradient
    evaluations of every piece they came from (warm-up included) and those pieces' summed
    wall time, whichever run computed them; with compilation asked for, the reasons any of
    those pieces ran in eager mode instead."""

    draws: dict[str, torch.Tensor]
    divergences: int
    grad_evals: int
    wall_s: float
    eager_because: tuple[str, ...] = ()


@dataclass(frozen=True)
class _UnitTask:
    model: ZooModel
    data: torch.Tensor
    target: str
    directory: str
    sampler: str
    unit: int
    num_chains: int  # in this unit
    num_segments: int
    num_warmup: int
    seed: int
    mode_location: torch.Tensor
    mode_covariance: torch.Tensor
    compile: bool
    verbose: bool


def _piece_seed(seed: int, unit: int, piece: int) -> int:
    """Independent streams per (seed, unit, piece): piece 0 is the warm-up."""
    return int(np.random.SeedSequence([seed, unit, piece]).generate_state(1)[0])


def save_atomically(payload: dict[str, Any], path: Path) -> None:
    """Write-then-rename, so a killed run never leaves a truncated piece behind. The partial
    file is per process: a worker orphaned by a killed build (it runs on to the end of its
    chain) and the workers of the rerun may write the same piece, identically."""
    partial = path.with_suffix(f".{os.getpid()}.partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def _kernel(potential: CountingPotential, start: dict[str, torch.Tensor], warmup_steps: int,
            adapted: dict[str, Any] | None = None) -> PyroNUTS:
    """NUTS with a dense mass matrix: adapting it over ``warmup_steps``, or with the
    ``adapted`` step size and inverse mass matrix fixed."""
    kernel = PyroNUTS(potential_fn=potential, full_mass=True, adapt_step_size=adapted is None,
                      adapt_mass_matrix=adapted is None, step_size=1.0 if adapted is None else adapted["step_size"])
    kernel.initial_params = start
    kernel.setup(warmup_steps)
    if adapted is not None:
        kernel.mass_matrix_adapter.inverse_mass_matrix = adapted["inverse_mass_matrix"]
    return kernel


def _laplace_start(potential: FlatPotential, location: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """A chain's flat starting point: a draw from the Laplace approximation at the mode where
    the density is finite."""
    laplace = dist.MultivariateNormal(location, covariance_matrix=covariance)
    for _ in range(100):
        draw = laplace.sample()
        if torch.isfinite(potential(draw)):
            return draw
    raise GoldStandardError(f"no finite starting point in 100 draws around the mode at {location}")


def _unit_path(directory: Path, task: _UnitTask, piece: str) -> Path:
    return directory / f"{'chain' if task.sampler == 'nuts' else 'group'}{task.unit}-{piece}.pt"


def _segment(segment: int) -> str:
    return f"segment{segment:05d}"


def _nuts_warmup(task: _UnitTask, potential: FlatPotential) -> dict[str, Any]:
    z = potential.unflatten(_laplace_start(potential, task.mode_location, task.mode_covariance))
    kernel = _kernel(potential.counted, z, task.num_warmup)
    for _ in range(task.num_warmup):
        z = kernel.sample(z)
    return {"state": z, "step_size": kernel.step_size, "inverse_mass_matrix": kernel.inverse_mass_matrix}


def _nuts_segment(potential: FlatPotential, adapted: dict[str, Any], z: dict[str, torch.Tensor]) -> dict[str, Any]:
    kept = []
    kernel = _kernel(potential.counted, z, 0, adapted)
    for _ in range(SEGMENT_DRAWS):
        z = kernel.sample(z)
        kept.append(z)
    divergent = torch.zeros(1, SEGMENT_DRAWS, dtype=torch.bool)
    divergent[0, kernel._divergences] = True
    draws = {s: potential.constrain[s](torch.stack([k[s] for k in kept])).detach().unsqueeze(0)
             for s in potential.shapes}
    return {"draws": draws, "state": z, "divergent": divergent}


def _chees_warmup(task: _UnitTask, potential: FlatPotential) -> dict[str, Any]:
    starts = torch.stack([_laplace_start(potential, task.mode_location, task.mode_covariance)
                          for _ in range(task.num_chains)])
    state, kernel = chees_warmup(potential, starts, task.num_warmup)
    return {"state": state.x, "step_size": kernel.step_size, "trajectory_length": kernel.trajectory_length,
            "inverse_mass": kernel.inverse_mass}


def _chees_segment(potential: FlatPotential, adapted: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    kernel = ChEESKernel(adapted["step_size"], adapted["trajectory_length"], adapted["inverse_mass"])
    chains = run_fixed_kernel(potential, x, SEGMENT_DRAWS, kernel)
    num_chains = x.shape[0]
    flat = chains.states.transpose(0, 1).reshape(num_chains * SEGMENT_DRAWS, potential.dim)
    draws = {s: v.detach().reshape(num_chains, SEGMENT_DRAWS, *v.shape[1:])
             for s, v in potential.constrained(flat)[0].items()}
    return {"draws": draws, "state": chains.states[-1], "divergent": chains.stats["diverging"].T}


_RUNS = {"nuts": (_nuts_warmup, _nuts_segment), "chees": (_chees_warmup, _chees_segment)}


def _run_unit(task: _UnitTask) -> None:
    """Runs whatever of the unit's warm-up and first ``num_segments`` segments is not saved yet."""
    torch.set_num_threads(1)
    directory = Path(task.directory)
    warm_up, run_segment = _RUNS[task.sampler]
    potential = FlatPotential(task.model.target(task.data, task.target))
    # Why this process's pieces ran in eager mode although compilation was asked for ("" if not).
    eager_because = ""
    if task.compile:
        example = task.mode_location.expand(task.num_chains, -1)
        eager_because = potential.compile(example) or ""
    warmup_path = _unit_path(directory, task, "warmup")
    if not warmup_path.exists():
        start_time = time.perf_counter()
        pyro.set_rng_seed(_piece_seed(task.seed, task.unit, 0))
        before = potential.counted.grad_evals
        adapted = warm_up(task, potential)
        save_atomically({**adapted, "grad_evals": potential.counted.grad_evals - before,
                         "wall_s": time.perf_counter() - start_time, "eager_because": eager_because}, warmup_path)
    adapted = torch.load(warmup_path)
    state = adapted["state"]
    for segment in range(task.num_segments):
        path = _unit_path(directory, task, _segment(segment))
        if path.exists():
            continue
        if segment > 0:
            state = torch.load(_unit_path(directory, task, _segment(segment - 1)))["state"]
        start_time = time.perf_counter()
        pyro.set_rng_seed(_piece_seed(task.seed, task.unit, segment + 1))
        before = potential.counted.grad_evals
        # Argument validation off, as Pyro itself runs warm-up: the draws are the same, it
        # costs ~20% of each gradient (make bench), and an invalid parameter deep in a
        # trajectory then becomes a non-finite energy, which counts as a divergence (and the
        # gate sees), instead of an exception that ends hours of chains.
        with pyro.validation_enabled(False):
            piece = run_segment(potential, adapted, state)
        wall_s = time.perf_counter() - start_time
        save_atomically({**piece, "grad_evals": potential.counted.grad_evals - before, "wall_s": wall_s,
                         "eager_because": eager_because}, path)
        if task.verbose:
            print(f"{task.sampler} unit {task.unit}: segment {segment + 1}/{task.num_segments} saved "
                  f"({task.num_chains} x {SEGMENT_DRAWS} draws, {wall_s:.0f} s)", file=sys.stderr, flush=True)


def open_build_directory(directory: Path, identity: dict[str, Any]) -> Path:
    """Create ``directory`` for a build, or check that the build it holds is this one:
    resuming with another model, data, seed or warm-up would mix different chains."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.json"
    identity = json.loads(json.dumps(identity))  # as it reads back (tuples become lists)
    if manifest.exists():
        stored = json.loads(manifest.read_text())
        if stored != identity:
            differing = sorted(k for k in stored.keys() | identity.keys() if stored.get(k) != identity.get(k))
            raise ValueError(f"{directory} holds the chains of another build (it differs in {', '.join(differing)}: "
                             f"{ {k: stored.get(k) for k in differing} } there, "
                             f"{ {k: identity.get(k) for k in differing} } now); "
                             f"choose another build directory or delete that one")
    else:
        manifest.write_text(json.dumps(identity, indent=1) + "\n")
    return directory


def run_saved_chains(model: ZooModel, data: torch.Tensor, target: str, mode_location: torch.Tensor,
                     mode_covariance: torch.Tensor, *, directory: Path, num_chains: int, draws_per_chain: int,
                     num_warmup: int, seed: int, sampler: str = SAMPLERS[0], compile: bool = False, jobs: int = 1,
                     verbose: bool = False) -> ChainDraws:
    """``num_chains`` chains of ``sampler`` started from the Laplace approximation at a mode,
    each run to at least ``draws_per_chain`` draws in ``directory`` (reusing what it holds),
    by ``jobs`` worker processes (1: in this process). ``compile`` runs ChEES's batched
    potential through ``torch.compile`` (:meth:`FlatPotential.compile`, with its checked
    fallback to eager mode)."""
    check_integer(model.name, "jobs", jobs, 1, 256)
    if compile and sampler != "chees":
        raise ValueError(f"compile applies to the chees sampler's batched potential, not to {sampler!r}")
    units = num_chains if _checked_sampler(sampler) == "nuts" else CHEES_GROUPS
    if num_chains % units or (sampler == "chees" and num_chains // units < 2):
        raise ValueError(f"a ChEES build runs {CHEES_GROUPS} groups of at least 2 chains: num_chains must be a "
                         f"multiple of {CHEES_GROUPS} and at least {2 * CHEES_GROUPS}, got {num_chains}")
    directory.mkdir(parents=True, exist_ok=True)
    num_segments = math.ceil(draws_per_chain / SEGMENT_DRAWS)
    tasks = [_UnitTask(model, data, target, str(directory), sampler, unit, num_chains // units, num_segments,
                       num_warmup, seed, mode_location, mode_covariance, compile, verbose) for unit in range(units)]
    if jobs == 1:
        for task in tasks:
            _run_unit(task)
    else:
        # spawn, not fork: a forked child inherits torch's thread pools mid-state (see sweep/executors.py).
        with ProcessPoolExecutor(min(jobs, units), mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in [pool.submit(_run_unit, task) for task in tasks]:
                future.result()
    chains, divergences, eager_because = [], 0, set()
    grad_evals, wall_s = 0, 0.0
    for task in tasks:
        warmup = torch.load(_unit_path(directory, task, "warmup"))
        grad_evals, wall_s = grad_evals + warmup["grad_evals"], wall_s + warmup["wall_s"]
        pieces = [torch.load(_unit_path(directory, task, _segment(k))) for k in range(num_segments)]
        eager_because |= {piece.get("eager_because", "") for piece in [warmup, *pieces]} - {""}
        for k, piece in enumerate(pieces):
            grad_evals, wall_s = grad_evals + piece["grad_evals"], wall_s + piece["wall_s"]
            divergences += int(piece["divergent"][:, :draws_per_chain - k * SEGMENT_DRAWS].sum())
        # Each site (chains of the unit, draws, ...): the unit's chains, cut to draws_per_chain.
        chains.append({s: torch.cat([p["draws"][s] for p in pieces], dim=1)[:, :draws_per_chain]
                       for s in pieces[0]["draws"]})
    draws = {s: torch.cat([c[s] for c in chains]).flatten(0, 1) for s in chains[0]}
    return ChainDraws(draws, divergences, grad_evals, wall_s, tuple(sorted(eager_because)))
