"""Long NUTS chains for gold-standard builds, run in pieces saved to disk.

A reference can need hours of chains: factor analysis' posterior, whose noise variances
make rare, slow excursions into Heywood tails, needs about 200,000 iterations. Run as one
call, that work is lost to any interruption, and a build refused on ESS starts again from
nothing. Here each chain is a warm-up, which adapts the step size and a dense mass matrix
and is saved with them, then segments of :data:`SEGMENT_DRAWS` draws with that kernel
fixed, each saved as it finishes. So

- an interrupted build resumes at the last finished segment of each chain;
- a build refused on ESS, rerun with more draws per chain, extends its chains;
- chains run in parallel worker processes (``jobs``).

Every piece is seeded by (seed, chain, piece) alone, and a NUTS transition with a fixed step
size and mass matrix depends only on the current state and its random numbers, so the first
n draws of a chain are the same however the build was split into runs and processes.
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

from inference_comparisons.estimators.potential import CountingPotential, FlatPotential
from inference_comparisons.references.gates import GoldStandardError

__all__ = ["SEGMENT_DRAWS", "ChainDraws", "open_build_directory", "run_saved_chains", "save_atomically"]

#: Draws per saved segment: a few minutes of one chain on the slowest reference, so an
#: interruption costs little, and a few hundred kB a file.
SEGMENT_DRAWS = 500


@dataclass(frozen=True)
class ChainDraws:
    """The first ``draws_per_chain`` draws of each chain, chains concatenated in order
    (constrained values, one tensor per site), with their divergences, the gradient
    evaluations of every piece they came from (warm-up included) and those pieces' summed
    wall time, whichever run computed them."""

    draws: dict[str, torch.Tensor]
    divergences: int
    grad_evals: int
    wall_s: float


@dataclass(frozen=True)
class _ChainTask:
    model: ZooModel
    data: torch.Tensor
    target: str
    directory: str
    chain: int
    num_segments: int
    num_warmup: int
    seed: int
    mode_location: torch.Tensor
    mode_covariance: torch.Tensor
    verbose: bool


def _piece_seed(seed: int, chain: int, piece: int) -> int:
    """Independent streams per (seed, chain, piece): piece 0 is the warm-up."""
    return int(np.random.SeedSequence([seed, chain, piece]).generate_state(1)[0])


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


def _laplace_start(potential: FlatPotential, location: torch.Tensor, covariance: torch.Tensor) -> dict[str, torch.Tensor]:
    """A chain's starting point: a draw from the Laplace approximation at the mode where the
    density is finite."""
    laplace = dist.MultivariateNormal(location, covariance_matrix=covariance)
    for _ in range(100):
        draw = laplace.sample()
        if torch.isfinite(potential(draw)):
            return potential.unflatten(draw)
    raise GoldStandardError(f"no finite starting point in 100 draws around the mode at {location}")


def _segment_path(directory: Path, chain: int, segment: int) -> Path:
    return directory / f"chain{chain}-segment{segment:05d}.pt"


def _run_chain(task: _ChainTask) -> None:
    """Runs whatever of the chain's warm-up and first ``num_segments`` segments is not saved yet."""
    torch.set_num_threads(1)
    directory, chain = Path(task.directory), task.chain
    potential = FlatPotential(task.model.target(task.data, task.target))
    warmup_path = directory / f"chain{chain}-warmup.pt"
    if not warmup_path.exists():
        start_time = time.perf_counter()
        pyro.set_rng_seed(_piece_seed(task.seed, chain, 0))
        z = _laplace_start(potential, task.mode_location, task.mode_covariance)
        before = potential.counted.grad_evals
        kernel = _kernel(potential.counted, z, task.num_warmup)
        for _ in range(task.num_warmup):
            z = kernel.sample(z)
        save_atomically({"z": z, "step_size": kernel.step_size, "inverse_mass_matrix": kernel.inverse_mass_matrix,
                         "grad_evals": potential.counted.grad_evals - before,
                         "wall_s": time.perf_counter() - start_time}, warmup_path)
    adapted = torch.load(warmup_path)
    z = adapted["z"]
    for segment in range(task.num_segments):
        path = _segment_path(directory, chain, segment)
        if path.exists():
            continue
        if segment > 0:
            z = torch.load(_segment_path(directory, chain, segment - 1))["z"]
        start_time = time.perf_counter()
        pyro.set_rng_seed(_piece_seed(task.seed, chain, segment + 1))
        before = potential.counted.grad_evals
        kept = []
        # Argument validation off, as Pyro itself runs warm-up: the draws are the same, it
        # costs ~20% of each gradient (make bench), and an invalid parameter deep in a
        # trajectory then becomes a non-finite energy, which NUTS counts as a divergence
        # (and the gate sees), instead of an exception that ends hours of chains.
        with pyro.validation_enabled(False):
            kernel = _kernel(potential.counted, z, 0, adapted)
            for _ in range(SEGMENT_DRAWS):
                z = kernel.sample(z)
                kept.append(z)
        draws = {s: potential.constrain[s](torch.stack([k[s] for k in kept])).detach() for s in potential.shapes}
        wall_s = time.perf_counter() - start_time
        save_atomically({"draws": draws, "z": z, "divergent": torch.tensor(kernel._divergences, dtype=torch.long),
                         "grad_evals": potential.counted.grad_evals - before, "wall_s": wall_s}, path)
        if task.verbose:
            print(f"chain {chain}: segment {segment + 1}/{task.num_segments} saved ({SEGMENT_DRAWS} draws, "
                  f"{wall_s:.0f} s)", file=sys.stderr, flush=True)


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
               num_warmup: int, seed: int, jobs: int = 1, verbose: bool = False) -> ChainDraws:
    """``num_chains`` NUTS chains started from the Laplace approximation at a mode, each run
    to at least ``draws_per_chain`` draws in ``directory`` (reusing what it holds), by
    ``jobs`` worker processes (1: in this process)."""
    check_integer(model.name, "jobs", jobs, 1, 256)
    directory.mkdir(parents=True, exist_ok=True)
    num_segments = math.ceil(draws_per_chain / SEGMENT_DRAWS)
    tasks = [_ChainTask(model, data, target, str(directory), chain, num_segments, num_warmup, seed,
                        mode_location, mode_covariance, verbose) for chain in range(num_chains)]
    if jobs == 1:
        for task in tasks:
            _run_chain(task)
    else:
        # spawn, not fork: a forked child inherits torch's thread pools mid-state (see sweep/executors.py).
        with ProcessPoolExecutor(min(jobs, num_chains), mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in [pool.submit(_run_chain, task) for task in tasks]:
                future.result()
    chains, divergences = [], 0
    grad_evals, wall_s = 0, 0.0
    for chain in range(num_chains):
        warmup = torch.load(directory / f"chain{chain}-warmup.pt")
        grad_evals, wall_s = grad_evals + warmup["grad_evals"], wall_s + warmup["wall_s"]
        pieces = [torch.load(_segment_path(directory, chain, k)) for k in range(num_segments)]
        for k, piece in enumerate(pieces):
            grad_evals, wall_s = grad_evals + piece["grad_evals"], wall_s + piece["wall_s"]
            divergences += int((piece["divergent"] + k * SEGMENT_DRAWS < draws_per_chain).sum())
        chains.append({s: torch.cat([p["draws"][s] for p in pieces])[:draws_per_chain] for s in pieces[0]["draws"]})
    draws = {s: torch.cat([c[s] for c in chains]) for s in chains[0]}
    return ChainDraws(draws, divergences, grad_evals, wall_s)
