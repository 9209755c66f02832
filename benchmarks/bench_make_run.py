"""``make run`` now against ``make run`` at an earlier commit, side by side on one machine.

    python -m benchmarks.bench_make_run [--baseline 783795c] [--workers 1] [--keep DIR]

Both jobs run at the same time, each on its own ``--workers`` (one by default, so that on two
cores each has one core and any other load falls on both alike):

- the current ``make run`` (the default sweep, then the VAE checkpoints), with
  ``RESULTS`` and ``RUN_ARGS`` set;
- the default sweep as it was at ``--baseline`` (by default 783795c, the commit before the
  fast-MCMC issue's first step), from a ``git worktree`` with this environment's Python.

It reports each job's wall time end to end, its cells' summed wall time by method, and the
cells both jobs ran (same model, dataset, target, method, budget and seed) with their
summed time then and now: the same work, before and after. The figures go to
``benchmarks/MAKE_RUN.md`` and ``benchmarks/make_run.json``, which ``bench_mcmc`` quotes in
its goals table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from benchmarks import REPO, machine, worktree
from inference_comparisons.store import STORE_NAME, read_table

RESULTS_MD = REPO / "benchmarks" / "MAKE_RUN.md"
RESULTS_JSON = REPO / "benchmarks" / "make_run.json"
#: A cell's identity across versions of the code.
_CELL = ["model", "dataset", "target", "method", "budget", "seed"]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def _start(command: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    # Line-buffered logs of each job, next to its results: the run takes an hour.
    return subprocess.Popen(command, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait(jobs: dict[str, subprocess.Popen], clock: float, scratch: Path) -> dict[str, float]:
    """Each job's wall seconds from ``clock`` to its end; a job that fails stops the comparison."""
    walls: dict[str, float] = {}
    while len(walls) < len(jobs):
        for name, job in jobs.items():
            if name not in walls and job.poll() is not None:
                if job.returncode != 0:
                    raise RuntimeError(f"the {name} job exited with {job.returncode}; see {scratch / name}.log")
                walls[name] = time.perf_counter() - clock
                print(f"{name} finished in {walls[name] / 60:.1f} min", file=sys.stderr, flush=True)
        time.sleep(1)
    return walls


def _cells(out: Path) -> pd.DataFrame:
    table = read_table(out / STORE_NAME)
    return table[[*_CELL, "status", "cell_s"]]


def compare(base: pd.DataFrame, head: pd.DataFrame) -> pd.DataFrame:
    """Per method: cells and summed cell seconds in each job, and over the cells both ran."""
    common = base.merge(head, on=_CELL, suffixes=("_base", "_head"))
    rows = []
    for method in sorted(set(base.method) | set(head.method)):
        b, h, c = base[base.method == method], head[head.method == method], common[common.method == method]
        rows.append({"method": method, "cells_base": len(b), "s_base": b.cell_s.sum(), "cells_head": len(h),
                     "s_head": h.cell_s.sum(), "common": len(c), "common_s_base": c.cell_s_base.sum(),
                     "common_s_head": c.cell_s_head.sum()})
    frame = pd.DataFrame(rows)
    total = frame.drop(columns="method").sum().to_dict()
    return pd.concat([frame, pd.DataFrame([{"method": "all", **total}])], ignore_index=True)


def _markdown(result: dict, frame: pd.DataFrame) -> str:
    lines = [
        "# `make run`, now and at an earlier commit, side by side",
        "",
        f"`python -m benchmarks.bench_make_run --baseline {result['baseline']} --workers {result['workers']}` at "
        f"{result['head']}, {result['machine']}, both jobs at once, each on {result['workers']} worker(s); "
        f"started {result['started']}.",
        "",
        "| job | wall, end to end | cells | summed cell time |",
        "|---|---|---|---|",
        f"| `make run` at {result['head']} (default sweep + VAE checkpoints) | {result['head_wall_s'] / 60:.1f} min | "
        f"{result['head_cells']} | {result['head_cell_s'] / 60:.1f} min |",
        f"| default sweep at {result['baseline']} | {result['base_wall_s'] / 60:.1f} min | {result['base_cells']} | "
        f"{result['base_cell_s'] / 60:.1f} min |",
        "",
        f"End to end, now ÷ then: **{result['head_wall_s'] / result['base_wall_s']:.2f}×** the time. "
        f"On the {result['common_cells']} cells both ran, then ÷ now: "
        f"**{result['common_speedup']:.2f}×** faster.",
        "",
        "| method | cells then | min then | cells now | min now | common cells | their min then | their min now "
        "| then ÷ now |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in frame.itertuples():
        ratio = f"{row.common_s_base / row.common_s_head:.2f}" if row.common and row.common_s_head > 0 else "—"
        lines.append(f"| {row.method} | {row.cells_base:.0f} | {row.s_base / 60:.2f} | {row.cells_head:.0f} | "
                     f"{row.s_head / 60:.2f} | {row.common:.0f} | {row.common_s_base / 60:.2f} | "
                     f"{row.common_s_head / 60:.2f} | {ratio} |")
    return "\n".join(lines) + "\n"


def _measure(baseline_rev: str, num_workers: int, scratch: Path) -> tuple[dict, str]:
    """Both jobs at once, their results in ``scratch``; the figures and their markdown."""
    base_out, head_out = scratch / "base-results", scratch / "head-results"
    workers = ["--workers", str(num_workers)]
    with worktree(baseline_rev, scratch / "baseline") as baseline:
        started, clock = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
        jobs = {
            "base": _start([sys.executable, "-m", "inference_comparisons", "run", "--out", str(base_out), *workers],
                           baseline, scratch / "base.log"),
            "head": _start(["make", "run", f"RESULTS={head_out}", f"RUN_ARGS={' '.join(workers)}"], REPO,
                           scratch / "head.log"),
        }
        try:
            walls = _wait(jobs, clock, scratch)
        finally:
            for job in jobs.values():
                if job.poll() is None:
                    job.terminate()
    frame = compare(_cells(base_out), _cells(head_out))
    total = frame.iloc[-1]
    result = {
        "baseline": baseline_rev, "head": _git("rev-parse", "--short", "HEAD"), "workers": num_workers,
        "machine": machine(), "started": started,
        "base_wall_s": walls["base"], "head_wall_s": walls["head"],
        "base_cells": int(total.cells_base), "head_cells": int(total.cells_head),
        "base_cell_s": float(total.s_base), "head_cell_s": float(total.s_head),
        "common_cells": int(total.common), "common_speedup": float(total.common_s_base / total.common_s_head),
        "methods": frame.to_dict(orient="records"),
    }
    return result, _markdown(result, frame)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="783795c", metavar="REV", help="the earlier commit (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="workers of each job (default %(default)s)")
    parser.add_argument("--keep", type=Path, help="keep both jobs' results and logs in this directory")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    with ExitStack() as stack:
        scratch = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        scratch.mkdir(parents=True, exist_ok=True)
        result, markdown = _measure(args.baseline, args.workers, scratch)
    RESULTS_MD.write_text(markdown)
    RESULTS_JSON.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown)
    return result


if __name__ == "__main__":
    main()
