"""Importance sampling with the prior, side by side: the harness's ``is_prior`` against Pyro's
``Importance`` loop, a hand-vectorised weight pass, and (with ``--baseline REV``) the
harness as it was at an earlier commit.

    python -m benchmarks.bench_importance [--particles 10000] [--rounds 3] [--baseline REV]

On the mixture's posterior at the sweep's size (200 simulated points, 3 components), each
round runs, in a rotated order:

- Pyro's ``Importance`` with the prior as proposal (``guide=None``) on the target's collapsed
  model, and its log normaliser: one model and one guide execution per particle;
- the harness's whole ``is_prior`` cell through :func:`run_inference`: the log evidence and
  its standard error, the weighted moments of the quantities of interest, the
  Rao-Blackwellised assignment marginals and the PSIS k̂;
- a hand-vectorised weight pass in plain torch (prior draws, the collapsed log likelihood,
  nothing else): the floor for the weights alone;
- with ``--baseline REV``, the same ``is_prior`` cell in a ``git worktree`` of REV, in a
  subprocess timed from inside after one warm-up cell.

Then the current cell's phases, timed apart. Medians over rounds, one torch thread.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Importance

import zoo
from benchmarks import worktree
from inference_comparisons import run_inference
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.particles import importance_log_weights, prior_proposal
from inference_comparisons.estimators.weights import psis_khat
from inference_comparisons.sweep.plan import load_data
from zoo.numerics import log_mean_exp

#: One warm-up cell, then one timed cell at the given particles and seed; prints its wall seconds.
_CELL = """
import sys, time, torch
torch.set_num_threads(1)
import zoo
from inference_comparisons import run_inference
from inference_comparisons.sweep.plan import load_data
model = zoo.get_model("gmm"); data = load_data(model, "simulated")
run_inference(model, data, "is_prior", budget=1000, seed=0, target="posterior")
start = time.perf_counter()
run_inference(model, data, "is_prior", budget=int(sys.argv[1]), seed=int(sys.argv[2]), target="posterior")
print(time.perf_counter() - start)
"""


def _pyro_importance(target: zoo.Target, particles: int, seed: int) -> float:
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    Importance(target.collapsed_model, guide=None, num_samples=particles).run().get_log_normalizer()
    return time.perf_counter() - start


def _harness(model: zoo.ZooModel, data: torch.Tensor, particles: int, seed: int) -> float:
    start = time.perf_counter()
    run_inference(model, data, "is_prior", budget=particles, seed=seed, target="posterior")
    return time.perf_counter() - start


def _hand_vectorised(model: zoo.ZooModel, data: torch.Tensor, particles: int, seed: int) -> float:
    """Prior draws of the globals and the collapsed log likelihood, in plain torch."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    priors = model.priors()
    weights, locs, scales = (priors[site].sample((particles,)) for site in ("weights", "locs", "scales"))
    normal = dist.Normal(locs[:, None], scales[:, None]).log_prob(data[None, :, None, :]).sum(-1)
    log_lik = (weights.log()[:, None, :] + normal).logsumexp(-1).sum(-1)
    log_mean_exp(log_lik)
    return time.perf_counter() - start


def _baseline(tree: Path, particles: int, seed: int) -> float:
    out = subprocess.run([sys.executable, "-c", _CELL, str(particles), str(seed)], cwd=tree, check=True,
                         capture_output=True, text=True).stdout
    return float(out.split()[-1])


def _phases(model: zoo.ZooModel, data: torch.Tensor, particles: int) -> dict[str, float]:
    """Seconds of each phase of the current ``is_prior`` cell, run apart."""
    target = model.target(data, "posterior")
    times = {}
    start = time.perf_counter()
    log_weights, draws = importance_log_weights(target.collapsed_model, prior_proposal(target.collapsed_model),
                                                particles, target.max_plate_nesting, target.latent_sites)
    times["weights (vectorised model and proposal passes)"] = time.perf_counter() - start
    start = time.perf_counter()
    log_mean_exp(log_weights)
    times["log evidence and its SE"] = time.perf_counter() - start
    start = time.perf_counter()
    summarise_draws(target, draws, log_weights)
    times["moments and assignment marginals"] = time.perf_counter() - start
    start = time.perf_counter()
    psis_khat(log_weights)
    times["PSIS k̂"] = time.perf_counter() - start
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="REV", help="also time is_prior as it was at this git revision")
    args = parser.parse_args(argv)
    if args.particles < 100 or args.rounds < 1:
        parser.error(f"need --particles >= 100 and --rounds >= 1, got {args.particles} and {args.rounds}")
    torch.set_num_threads(1)
    model = zoo.get_model("gmm")
    data = load_data(model, "simulated")
    target = model.target(data, "posterior")
    _harness(model, data, 1000, 0)  # warm-up: imports, caches
    runners: dict[str, Callable[[int], float]] = {
        "Pyro Importance": lambda seed: _pyro_importance(target, args.particles, seed),
        "harness is_prior (whole cell)": lambda seed: _harness(model, data, args.particles, seed),
        "hand-vectorised weights only": lambda seed: _hand_vectorised(model, data, args.particles, seed),
    }
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        if args.baseline:
            baseline = stack.enter_context(worktree(args.baseline, Path(scratch) / "baseline"))
            runners[f"harness is_prior at {args.baseline} (whole cell)"] = \
                lambda seed: _baseline(baseline, args.particles, seed)
        names, walls = list(runners), {name: [] for name in runners}
        for round_ in range(args.rounds):  # interleaved, rotated: load drifts into every row alike
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                walls[name].append(runners[name](round_))
                print(f"round {round_}: {name}: {walls[name][-1]:.3f} s", file=sys.stderr, flush=True)
    medians = {name: statistics.median(values) for name, values in walls.items()}
    pyro_s = medians["Pyro Importance"]
    print(f"mixture posterior (N = {len(data)}, K = 3), {args.particles} prior particles, "
          f"{args.rounds} interleaved rounds, medians, one thread\n")
    print("| run | wall s | Pyro's wall ÷ this |\n|---|---|---|")
    for name, wall in medians.items():
        print(f"| {name} | {wall:.3f} | {pyro_s / wall:.1f}× |")
    phases = _phases(model, data, args.particles)
    print("\n| phase of the current cell | s |\n|---|---|")
    for name, wall in phases.items():
        print(f"| {name} | {wall:.3f} |")
    return medians


if __name__ == "__main__":
    main()
