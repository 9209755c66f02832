"""Reports rebuilt from the store alone: ``results.csv``, ``report.md`` and ``plots/*.png``.

``report.md`` holds, for each problem (model, dataset, target): a table of methods × budgets with each error
and cost as mean ± sd over seeds; the cost for each method to reach an error ε
(:data:`~inference_comparisons.report.measures.EPSILONS`); across all of them, the
measured method table; where the sweep ran the amortised methods, the inference-gap
decomposition (:mod:`~inference_comparisons.report.gaps`); where it ran a swiss-roll VAE
checkpoint, its disentanglement (:mod:`~inference_comparisons.report.disentanglement`, the one
section that reads the model as well as the store); and, where calibration stored
ranks, its section (:mod:`~inference_comparisons.report.calibration`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from inference_comparisons.report.measures import (EPSILONS, Problem, cost_to_reach, format_value, markdown_table,
                                                   mean_sd, measured_method_table, method_order, metrics_present,
                                                   problems, with_derived)
from inference_comparisons.report.calibration import calibration_section, calibration_table
from inference_comparisons.report.disentanglement import disentanglement_section
from inference_comparisons.report.gaps import inference_gap_section
from inference_comparisons.report.plots import plot_name, write_plots
from inference_comparisons.schema import COLUMNS
from inference_comparisons.store import RANK_TABLE, STORE_NAME, read_table

__all__ = ["report_from_store", "write_report"]


def _section(problem: Problem, group: pd.DataFrame) -> list[str]:
    lines = [f"## {problem.title}", ""]
    metrics = metrics_present(group)
    header = ["method", "budget", "unit", "ok/seeds", *[f"{m}" for m in metrics],
              "wall_s", "density_evals", "grad_evals", "khat", "notes"]
    rows = []
    ordered = group.assign(_order=method_order(group["method"])).sort_values(["_order", "budget"], kind="stable")
    for (_, method, budget), cells in ordered.groupby(["_order", "method", "budget"], sort=False):
        ok = cells[cells["status"] == "ok"]
        statuses = sorted(set(cells["status"]) - {"ok"})
        notes = "; ".join(sorted({m for m in cells["message"] if m}))
        if statuses:
            notes = "/".join(statuses) + (f": {notes}" if notes else "")
        rows.append([method, format_value(budget), cells["budget_unit"].iloc[0], f"{len(ok)}/{len(cells)}",
                     *[mean_sd(ok[m]) for m in metrics], mean_sd(ok["wall_s"]), mean_sd(ok["density_evals"]),
                     mean_sd(ok["grad_evals"]), mean_sd(pd.to_numeric(ok["khat"], errors="coerce")),
                     notes[:200]])
    lines += markdown_table(header, rows)
    if metrics:
        lines += ["Cost to reach ε (cheapest budget whose mean error over seeds is at most ε):", ""]
        reached = {m: cost_to_reach(group, m, EPSILONS[m]) for m in metrics}
        methods = list(dict.fromkeys(method for per in reached.values() for method in per))
        lines += markdown_table(["method", *[f"{m} ≤ {EPSILONS[m]:g}" for m in metrics]],
                                 [[method, *[reached[m].get(method, ("", 0))[0] for m in metrics]]
                                  for method in methods])
        lines += [f"![{problem.title}](plots/{plot_name(problem)})", ""]
    return lines


def write_report(table: pd.DataFrame | None, out: Path, ranks: pd.DataFrame | None = None) -> None:
    """``results.csv`` (one row per cell), ``report.md`` and ``plots/`` from ``table``, and
    from calibration's ``ranks`` rows (if any) ``calibration.csv`` and the report's
    calibration section.

    Everything is written into a temporary directory first and then renamed into place,
    file by file: an interrupted report leaves the previous files whole, never half of a
    new one, and a report that fails leaves the previous report as it was."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=out) as scratch:
        new = Path(scratch)
        lines = [] if table is None else _cells_report(table, new)
        if ranks is not None and len(ranks):
            lines = lines or ["# Calibration of inference methods", ""]
            lines += calibration_section(ranks, new / "plots")
            calibration_table(ranks).to_csv(new / "calibration.csv", index=False)
        (new / "report.md").write_text("\n".join(lines))
        for path in sorted(new.rglob("*")):
            if path.is_file():
                final = out / path.relative_to(new)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, final)


def _cells_report(table: pd.DataFrame, out: Path) -> list[str]:
    """``results.csv`` and the plots written to ``out``; the report's lines returned."""
    table.to_csv(out / "results.csv", index=False)
    table = with_derived(table.assign(message=table["message"].fillna("")))
    epsilons = "; ".join(f"`{m}` ≤ {e:g}" for m, e in EPSILONS.items())
    lines = ["# Exactness against cost", "",
             f"{len(table)} cells: " + ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()) + ".",
             "Errors are against each target's reference (exact where `reference_exact`), in absolute value: "
             "`log_evidence_error` in nats (SVI's ELBO is a bound, so its signed error is negative), "
             "`mean_error` in posterior standard deviations, `sd_error` as |log(sd ratio)|, `local_tv` as a "
             "total-variation distance. Each entry is mean ± sd over the seeds whose cell is `ok`; costs are "
             "wall seconds of the inference call (torch on one thread) and counted evaluations.",
             "", f"ε per metric: {epsilons} (the reasons are in `inference_comparisons/report/measures.py`'s `EPSILONS`).", "",
             "## Methods, as measured", "",
             "Generated from the cells below: *exactness* counts the (target, metric) pairs where the method "
             "reached ε and gives the median log-log slope of error against budget "
             "(−0.5 is Monte Carlo's rate); *best for* names where it was the cheapest to reach ε.", ""]
    measured = measured_method_table(table)
    lines += markdown_table(measured.columns, measured.itertuples(index=False))
    for problem, group in problems(table):
        lines += _section(problem, group)
    lines += inference_gap_section(table)
    lines += disentanglement_section(table)
    write_plots(table, out / "plots")
    return lines


def report_from_store(out: Path | str) -> pd.DataFrame | None:
    """Rebuild ``results.csv``, ``report.md`` and ``plots/`` (and, where calibration stored
    ranks, ``calibration.csv`` and the calibration section) from ``out/results.sqlite``
    alone; return the stored cells (``None`` for a store of calibration ranks only). A
    missing store, or one with neither table, is a ``ValueError``."""
    out = Path(out)
    ranks = read_table(out / STORE_NAME, table=RANK_TABLE, missing_ok=True)
    table = read_table(out / STORE_NAME, missing_ok=ranks is not None)
    if table is not None:
        # A store written by an older version may lack newer columns: empty, not an error.
        table = table.reindex(columns=list(dict.fromkeys([*COLUMNS, *table.columns])))
        table[["message", "idata_path"]] = table[["message", "idata_path"]].fillna("")
    write_report(table, out, ranks)
    return table
