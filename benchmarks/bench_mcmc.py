"""End-to-end MCMC, side by side: NumPyro's NUTS against Pyro's NUTS and the harness's
samplers (``nuts``, ``chees``, ``nuts_lockstep``) on the mixture, HMM and factor-analysis
posteriors at the harness's sizes (the sweep's simulated data).

    python -m benchmarks.bench_mcmc [--rounds 3] [--models gmm,hmm,factor_analysis] [--out benchmarks/RESULTS.md]

(``make bench`` installs the ``bench`` extra, numpyro and jax, and runs it.)

Every sampler keeps about 1,000 draws: NumPyro with 1 chain (1,000 warm-up + 1,000), with 2
chains one after another and 2 chains in parallel (500 + 500 each); Pyro's NUTS on the
target's collapsed Pyro model, 2 chains one after another (500 + 500 each); the harness's
``nuts`` at budget 1,000 (the same schedule, on its plain-torch potential), and ``chees``
and ``nuts_lockstep`` at budget 1,024 with their own warm-up (200 iterations). The
measures:

- ESS/s: the minimum bulk ESS (ArviZ, rank-normalised) over the target's quantities of
  interest, per wall second of the whole run (model set-up, warm-up and NumPyro's
  compilation included);
- max mean error: the largest |posterior mean - reference mean| over the quantities of
  interest, in the stored gold standard's posterior sds: a sampler whose chain is stuck in a
  local mode has a fine-looking ESS of the wrong answer;
- ESS per gradient: the same ESS per potential-gradient evaluation, warm-up included (for
  NumPyro, its leapfrog steps; not counted for Pyro's NUTS);
- for the lockstep samplers, the cost per chain-gradient against the batched potential
  and gradient alone at the same batch size: the sampler's overhead.

It ends with the fast-MCMC issue's goals, met or not: the end-to-end ratios above, the
steady-state costs per gradient of :mod:`benchmarks.bench_steady_state`, and ``is_prior``
against Pyro's ``Importance`` from :mod:`benchmarks.bench_importance` (one round).

Runs are interleaved (each round runs every sampler once, in a rotated order) and the
table shows medians over rounds, so a machine's load drifts into every sampler alike.
NumPyro's log densities are checked equal to the zoo's up to a constant before timing
(:mod:`benchmarks.numpyro_targets`).
"""

from __future__ import annotations

import os

# Two host devices, before jax is imported: NumPyro's "parallel" chains need one each.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import argparse  # noqa: E402 - after the XLA flag
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import arviz as az  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from numpyro.infer import MCMC as NumPyroMCMC  # noqa: E402
from numpyro.infer import NUTS as NumPyroNUTS  # noqa: E402
from pyro.infer import MCMC, NUTS  # noqa: E402

import zoo  # noqa: E402
import zoo.references as references  # noqa: E402
from benchmarks import bench_importance, bench_make_run, bench_steady_state, machine  # noqa: E402
from benchmarks.numpyro_targets import check_log_density, numpyro_model  # noqa: E402
from inference_comparisons import get_method, run_inference  # noqa: E402
from inference_comparisons.estimators.potential import FlatPotential  # noqa: E402
from inference_comparisons.sweep.plan import load_data  # noqa: E402

MODELS = ("gmm", "hmm", "factor_analysis")
#: Kept draws of every sampler, and the warm-up of the NUTS runs (per chain: half each for 2).
DRAWS = 1000
LOCKSTEP_BUDGET = 1024


@dataclass(frozen=True)
class Run:
    """One sampler's run: its draws ``(chains, draws, ...)`` per site, wall seconds and
    gradient evaluations (NaN where not counted)."""

    draws: dict[str, torch.Tensor]
    wall_s: float
    grad_evals: float


Sampler = Callable[[zoo.ZooModel, torch.Tensor, int], Run]


def _numpyro(num_chains: int, chain_method: str) -> Sampler:
    def sample(model: zoo.ZooModel, data: torch.Tensor, seed: int) -> Run:
        start = time.perf_counter()
        fn, kwargs = numpyro_model(model.name, model, data)
        per_chain = DRAWS // num_chains
        mcmc = NumPyroMCMC(NumPyroNUTS(fn), num_warmup=per_chain, num_samples=per_chain, num_chains=num_chains,
                           chain_method=chain_method, progress_bar=False)
        mcmc.warmup(jax.random.PRNGKey(seed), **kwargs, extra_fields=("num_steps",), collect_warmup=True)
        warmup_steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
        mcmc.run(mcmc.post_warmup_state.rng_key, **kwargs, extra_fields=("num_steps",))
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        steps = warmup_steps + int(np.sum(mcmc.get_extra_fields()["num_steps"]))
        draws = {site: torch.tensor(np.array(value)) for site, value in samples.items()}
        return Run(draws, time.perf_counter() - start, float(steps))

    return sample


def _pyro_nuts(model: zoo.ZooModel, data: torch.Tensor, seed: int) -> Run:
    """Pyro's NUTS on the target's collapsed Pyro model, 2 chains one after another."""
    start = time.perf_counter()
    target = model.target(data, "posterior")
    chains = []
    for chain in range(2):
        pyro.set_rng_seed(seed + chain)
        kernel = NUTS(target.collapsed_model, max_plate_nesting=target.max_plate_nesting)
        mcmc = MCMC(kernel, num_samples=DRAWS // 2, warmup_steps=DRAWS // 2, disable_progbar=True)
        mcmc.run()
        chains.append(mcmc.get_samples())
    draws = {site: torch.stack([chain[site] for chain in chains]) for site in target.continuous_sites}
    return Run(draws, time.perf_counter() - start, float("nan"))


def _harness(method: str, budget: int) -> Sampler:
    def sample(model: zoo.ZooModel, data: torch.Tensor, seed: int) -> Run:
        start = time.perf_counter()
        result = run_inference(model, data, method, budget=budget, seed=seed, target="posterior")
        wall = time.perf_counter() - start
        draws = {site: value.reshape(result.num_chains, -1, *value.shape[1:]) for site, value in result.draws.items()}
        return Run(draws, wall, float(result.cost.grad_evals))

    return sample


SAMPLERS: dict[str, Sampler] = {
    "numpyro NUTS, 1 chain": _numpyro(1, "sequential"),
    "numpyro NUTS, 2 chains sequential": _numpyro(2, "sequential"),
    "numpyro NUTS, 2 chains parallel": _numpyro(2, "parallel"),
    "pyro NUTS, 2 chains": _pyro_nuts,
    "harness nuts": _harness("nuts", DRAWS),
    "harness chees": _harness("chees", LOCKSTEP_BUDGET),
    "harness nuts_lockstep": _harness("nuts_lockstep", LOCKSTEP_BUDGET),
}


def _quantities(target: zoo.Target, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The target's quantities of interest at draws ``(chains, draws, ...)``, each shaped
    ``(chains, draws, k)``."""
    num_chains, num_draws = next(iter(draws.values())).shape[:2]
    flat = {site: value.reshape(num_chains * num_draws, *value.shape[2:]).to(torch.float64)
            for site, value in draws.items()}
    return {name: values.reshape(num_chains, num_draws, -1) for name, values in target.quantities(flat).items()}


def min_bulk_ess(target: zoo.Target, draws: dict[str, torch.Tensor]) -> float:
    """The minimum rank-normalised bulk ESS over the target's quantities of interest."""
    ess = [az.ess(az.convert_to_dataset(values.numpy()), method="bulk").to_array().values.ravel()
           for values in _quantities(target, draws).values()]
    return float(np.min(np.concatenate(ess)))  # NaN (too few draws per chain) propagates


def max_mean_error(target: zoo.Target, reference: zoo.Reference, draws: dict[str, torch.Tensor]) -> float:
    """The largest |posterior mean - reference mean| / reference sd over the quantities of
    interest: what an ESS cannot show (a chain stuck in a local mode has an ESS too)."""
    errors = [(values.mean((0, 1)) - reference.moments[name].mean.reshape(-1)).abs()
              / reference.moments[name].sd.reshape(-1) for name, values in _quantities(target, draws).items()]
    return float(torch.cat(errors).max())


def potential_cost(target: zoo.Target, batch: int) -> float:
    """Seconds per draw of the batched potential and gradient at ``batch`` points: the floor
    under a lockstep sampler's cost per chain-gradient."""
    space = FlatPotential(target)
    return 1e-6 * bench_steady_state.batched_floor_us(space, 0.1 * torch.randn(batch, space.dim, dtype=torch.float64))


def _table(name: str, rows: dict[str, list[tuple[float, float, float, float]]]) -> tuple[list[str], dict[str, float]]:
    """Markdown rows of medians over rounds: wall, ESS, ESS/s, its ratio to NumPyro's best,
    gradients and ESS per gradient; and each sampler's ESS/s."""
    medians = {sampler: tuple(statistics.median(r[i] for r in runs) for i in range(4))
               for sampler, runs in rows.items()}
    ess_per_s = {sampler: ess / wall for sampler, (wall, ess, _, _) in medians.items()}
    best = max(v for s, v in ess_per_s.items() if s.startswith("numpyro"))
    lines = [f"### {name}", "", "| sampler | wall s | min bulk ESS | ESS/s | ÷ NumPyro's best | max mean error (ref. sd) "
             "| gradients | ESS per 1000 gradients |", "|---|---|---|---|---|---|---|---|"]
    for sampler, (wall, ess, grads, error) in medians.items():
        counted = f"{grads:.0f} | {1000 * ess / grads:.2f} |" if grads == grads else "— | — |"  # NaN: not counted
        lines.append(f"| {sampler} | {wall:.1f} | {ess:.0f} | {ess_per_s[sampler]:.2f} | "
                     f"{ess_per_s[sampler] / best:.3f} | {error:.3f} | {counted}")
    return lines + [""], ess_per_s


def reference_builds() -> list[str]:
    """The stored posterior gold standards' build times, as their provenance records them."""
    lines = ["", "The stored posterior gold standards, as their provenance records their last build (goal: each "
             "within 10 minutes on 2 cores; a build resumed from saved chains records only its last session's "
             "wall time, and chain seconds sum over the 2 worker processes):", "",
             "| stored reference | sampler | build wall s | chain seconds |", "|---|---|---|---|"]
    for path in sorted(references.DIRECTORY.glob("*-posterior-*.json")):
        provenance = json.loads(path.read_text())["provenance"]
        if references.source_of({"provenance": provenance}) != "zoo":
            continue  # posteriordb's, imported rather than built
        built = provenance.get("diagnostics", {})
        lines.append(f"| {path.stem} | {provenance.get('sampler', 'nuts')} | {built.get('wall_s', '—')} | "
                     f"{built.get('chain_wall_s', '—')} |")
    return lines


def _goals(ess_per_s: dict[str, dict[str, float]], models: list[str]) -> list[str]:
    """The fast-MCMC issue's goals as a table of measured ratios, each with its threshold."""
    steady = {name: bench_steady_state.measure(name) for name in models}
    importance = bench_importance.main(["--rounds", "1"])
    numpyro_best = {name: max(v for s, v in rates.items() if s.startswith("numpyro"))
                    for name, rates in ess_per_s.items()}
    goals: list[tuple[str, str, dict[str, float]]] = [
        ("`chees` ESS/s ÷ NumPyro's best (end to end)", "≥ 1 (aim 2)",
         {m: ess_per_s[m]["harness chees"] / numpyro_best[m] for m in models}),
        ("`chees` ESS/s ÷ harness `nuts`", "≥ 10",
         {m: ess_per_s[m]["harness chees"] / ess_per_s[m]["harness nuts"] for m in models}),
    ]
    for mode in ("eager", "compiled"):
        cost = {m: steady[m].get(f"chees {mode}", math.nan) for m in models}  # NaN: compiling fell back
        goals += [
            (f"`chees` ({mode}) µs per chain-gradient ÷ JAX's compiled floor", "≤ 3",
             {m: cost[m] / steady[m]["jax gradient in a compiled loop"] for m in models}),
            (f"`chees` ({mode}) µs per chain-gradient ÷ NumPyro's steady state", "≤ 2",
             {m: cost[m] / steady[m]["numpyro NUTS steady state"] for m in models}),
            (f"`chees` ({mode}) overhead: ÷ the batched potential and gradient alone", "≤ 2",
             {m: cost[m] / steady[m].get(f"batched potential {mode}", math.nan) for m in models}),
        ]
    lines = ["### Goals of the fast-MCMC issue", "",
             "Ratios from the tables above (end to end, medians over rounds) and from "
             "`benchmarks.bench_steady_state` (steady state, 32 chains after warm-up, one run each); "
             "NaN where the compiled potential fell back to eager mode.", "",
             "| goal | threshold | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    lines += [f"| {goal} | {threshold} | " + " | ".join(f"{ratios[m]:.2f}" for m in models) + " |"
              for goal, threshold, ratios in goals]
    lines += ["", "Steady-state µs per (chain-)gradient:", "",
              "| model | " + " | ".join(next(iter(steady.values()))) + " |",
              "|---|" + "---|" * len(next(iter(steady.values())))]
    lines += [f"| {m} | " + " | ".join(f"{v:.1f}" for v in row.values()) + " |" for m, row in steady.items()]
    lines += reference_builds()
    pyro_s = importance["Pyro Importance"]
    ours = importance["harness is_prior (whole cell)"]
    lines += ["", f"`is_prior`, 10⁴ particles on the mixture's posterior (one round of "
              f"`benchmarks.bench_importance`): {ours:.3f} s against Pyro's `Importance` {pyro_s:.1f} s, "
              f"{pyro_s / ours:.0f}× (goal ≥ 50×).", "", make_run_goal(), ""]
    return lines


def make_run_goal() -> str:
    """The goal on ``make run`` (at least 3× faster end to end), as ``bench_make_run`` last measured it."""
    if not bench_make_run.RESULTS_JSON.exists():
        return "`make run` against the commit before this issue: not measured (`python -m benchmarks.bench_make_run`)."
    run = json.loads(bench_make_run.RESULTS_JSON.read_text())
    speedup = run["base_wall_s"] / run["head_wall_s"]
    new = [m for m in run["methods"] if m["method"] != "all" and m["cells_base"] == 0]
    new_min = sum(m["s_head"] for m in new) / 60
    return (f"`make run` (goal: at least 3× faster end to end), side by side at {run['head']} against "
            f"{run['baseline']} (`benchmarks/MAKE_RUN.md`, {run['started']}): now {run['head_wall_s'] / 60:.1f} min "
            f"for {run['head_cells']} cells, then {run['base_wall_s'] / 60:.1f} min for {run['base_cells']}, "
            f"{speedup:.2f}× as fast end to end ({'met' if speedup >= 3 else 'not met'}); the {run['common_cells']} "
            f"cells both ran, {run['common_speedup']:.2f}× as fast. {new_min:.1f} of the {run['head_cell_s'] / 60:.1f} "
            f"cell-minutes now are {len(new)} methods added since; the cells both ran are Pyro's own samplers "
            f"(`nuts`, `hmc`) and the other methods as they were, which the sweep compares as they are, so the fast "
            f"samplers are new rows rather than faster old ones.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    torch.set_num_threads(1)
    numpyro.enable_x64()
    command = "python -m benchmarks.bench_mcmc " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before, started = os.getloadavg(), datetime.datetime.now(datetime.timezone.utc)
    report = ["# MCMC benchmark: NumPyro, Pyro and the harness, side by side", "",
              f"- command: `{command.strip()}`", f"- machine: {machine()}",
              f"- started {started:%Y-%m-%d %H:%M} UTC; versions: torch {torch.__version__}, pyro {pyro.__version__}, "
              f"jax {jax.__version__}, numpyro {numpyro.__version__}",
              f"- {args.rounds} interleaved rounds, medians shown; torch on 1 thread; NumPyro float64", ""]
    overheads = ["### The lockstep samplers' cost per chain-gradient", "",
                 "The floor is the batched potential and gradient of all C chains at one point, timed after the "
                 "runs; nuts_lockstep's batches shrink as chains finish their trees, so its floor per draw is "
                 "higher than this one.", "",
                 "| model | sampler | µs per chain-gradient in the run | batched potential + gradient alone, µs per "
                 "draw | overhead |", "|---|---|---|---|---|"]
    ess_per_s: dict[str, dict[str, float]] = {}
    for name in args.models.split(","):
        model = zoo.get_model(name)
        data = load_data(model, "simulated")
        target = model.target(data, "posterior")
        deviation = check_log_density(name)
        print(f"{name}: NumPyro's log density equals the zoo's up to a constant (deviation {deviation:.1e})",
              flush=True)
        reference = model.reference(data, "posterior")  # the stored gold standard
        rows: dict[str, list[tuple[float, float, float, float]]] = {sampler: [] for sampler in SAMPLERS}
        names = list(SAMPLERS)
        for round_ in range(args.rounds):
            for sampler in names[round_ % len(names):] + names[:round_ % len(names)]:
                run = SAMPLERS[sampler](model, data, round_)
                ess, error = min_bulk_ess(target, run.draws), max_mean_error(target, reference, run.draws)
                rows[sampler].append((run.wall_s, ess, run.grad_evals, error))
                print(f"{name} round {round_}: {sampler}: {run.wall_s:.1f} s, ESS {ess:.0f}, "
                      f"mean error {error:.3f} sd, {run.grad_evals:.0f} gradients", flush=True)
        lines, ess_per_s[name] = _table(f"{name} (d = {FlatPotential(target).dim}, N = {len(data)})", rows)
        report += lines
        for method in ("chees", "nuts_lockstep"):
            wall, _, grads = (statistics.median(r[i] for r in rows[f"harness {method}"]) for i in range(3))
            floor = potential_cost(target, get_method(method).num_chains)
            overheads.append(f"| {name} | {method} | {1e6 * wall / grads:.1f} | {1e6 * floor:.1f} | "
                             f"{wall / grads / floor:.2f}× |")
    report += overheads + [""] + _goals(ess_per_s, args.models.split(","))
    load_after = os.getloadavg()
    report += ["", f"Load average (1, 5, 15 min) before: {load_before[0]:.2f}, {load_before[1]:.2f}, "
                               f"{load_before[2]:.2f}; after: {load_after[0]:.2f}, {load_after[1]:.2f}, "
                               f"{load_after[2]:.2f}.", ""]
    args.out.write_text("\n".join(report))
    print("\n".join(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
