"""Compiled against eager potentials: what ``torch.compile`` buys a batched gradient.

    python -m benchmarks.bench_compile [--models gmm,hmm,factor_analysis] [--batch 32] [--rounds 7]

For each model's posterior on the sweep's simulated data (200 points), the potential and its
gradient at one batch of points (ChEES's or a reference build's chains), in eager torch and
through :meth:`FlatPotential.compile`, timed in interleaved rounds (medians, one thread). The
compile time is the first compiled call, checks included. The two must agree to 1e-9.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch

import zoo
from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.sweep import load_data


def _per_draw_us(space: FlatPotential, points: torch.Tensor, calls: int) -> float:
    start = time.perf_counter()
    with pyro.validation_enabled(False):  # as the lockstep samplers call it
        for _ in range(calls):
            space.batch_potential_and_grad(points)
    return (time.perf_counter() - start) / calls / len(points) * 1e6


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="gmm,hmm,factor_analysis")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    print(f"| posterior | compile s | eager µs per draw | compiled µs per draw | speed-up | batch {args.batch} |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = zoo.get_model(name)
        problem = model.target(model.validate(load_data(model, "simulated")), "posterior")
        eager, compiled = FlatPotential(problem), FlatPotential(problem)
        points = 0.3 * torch.randn(args.batch, eager.dim, dtype=torch.float64)
        start = time.perf_counter()
        fallback = compiled.compile(points)
        compile_s = time.perf_counter() - start
        if fallback:
            print(f"| {name} | {compile_s:.1f} | eager mode: {fallback} | | | |")
            continue
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.rounds):  # interleaved, so both see the same load
            times["eager"].append(_per_draw_us(eager, points, args.calls))
            times["compiled"].append(_per_draw_us(compiled, points, args.calls))
        row = {"compile_s": compile_s, **{k: statistics.median(v) for k, v in times.items()}}
        rows.append(row)
        print(f"| {name} | {compile_s:.1f} | {row['eager']:.1f} | {row['compiled']:.1f} | "
              f"{row['eager'] / row['compiled']:.2f}× | |", flush=True)
    return rows


if __name__ == "__main__":
    main()
