"""Reports rebuilt from the store alone: ``results.csv``, ``report.md`` and ``plots/*.png``.

``report.md`` holds, for each (model, target): a table of methods × budgets with each error
and cost as mean ± sd over seeds; the cost for each method to reach an error ε
(:data:`EPSILONS`); and, across all of them, a *measured* method table (exactness, cost,
best for) whose wording is generated from the numbers, never written per method. The plots
are the project's picture: log error against log cost, one line per method over its budgets,
a band over seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

__all__ = ["COST_AXES", "EPSILONS", "ERROR_METRICS", "SUMMARY_COLUMNS", "measured_method_table",
           "report_from_store", "summary", "write_report"]

#: What the printed table shows: exactness, cost and the diagnostics that explain them.
SUMMARY_COLUMNS = ("model", "target", "method", "budget", "budget_unit", "status", "wall_s", "grad_evals",
                   "density_evals", "log_evidence_error", "mean_error", "sd_error", "local_tv", "khat",
                   "ess_min", "rhat_max", "divergences")

#: Error metrics, each taken in absolute value (SVI's log evidence error is negative by
#: construction: the ELBO is a bound), with a readable name.
ERROR_METRICS = {"log_evidence_error": "|log evidence error| (nats)",
                 "mean_error": "mean error (posterior sd)",
                 "sd_error": "sd error |log ratio|",
                 "local_tv": "local TV distance"}
#: The error ε a method must reach for "cost to reach ε", per metric, and why.
EPSILONS = {
    # 0.1 nats: a Bayes factor known to within ~10 %, the precision a model comparison needs.
    "log_evidence_error": 0.1,
    # 0.1 posterior sd: the Monte Carlo error of ~100 independent draws, below what a plot shows.
    "mean_error": 0.1,
    # |log(sd ratio)| 0.1: posterior widths within ~10 %.
    "sd_error": 0.1,
    # 0.01 total variation: each data point's assignment/state probabilities within one percentage point.
    "local_tv": 0.01,
}
#: Cost axes of the plots: wall seconds, and counted model evaluations.
COST_AXES = {"wall_s": "wall seconds (one thread)", "evaluations": "density + gradient evaluations"}
#: Errors at or below this are exact up to floating point (the exact method's 0).
_EXACT_TOLERANCE = 1e-9


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of each (model, target, method, budget); statuses and messages kept."""
    keys = ["model", "dataset", "target", "method", "budget", "budget_unit"]
    numeric = [c for c in SUMMARY_COLUMNS if c not in keys and c != "status"]
    rows = []
    for key, group in table.groupby(keys, dropna=False, sort=False):
        row = dict(zip(keys, key))
        statuses = sorted(set(group["status"]))
        row["status"] = "/".join(statuses)
        row["num_seeds"] = len(group)
        ok = group[group["status"] == "ok"]
        for column in numeric:
            values = pd.to_numeric(ok[column], errors="coerce")
            row[column] = values.mean() if len(ok) else math.nan
        row["message"] = "; ".join(sorted({m for m in group["message"] if isinstance(m, str) and m}))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "status", "num_seeds", *numeric, "message"])


def _format(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        return f"{value:.3g}"
    return str(value)


def _with_derived(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for column in (*ERROR_METRICS, "wall_s", "density_evals", "grad_evals"):
        table[column] = pd.to_numeric(table.get(column, math.nan), errors="coerce")
    for column in ERROR_METRICS:
        table[column] = table[column].abs()
    table["evaluations"] = table["density_evals"].fillna(0) + table["grad_evals"].fillna(0)
    table.loc[table[["density_evals", "grad_evals"]].isna().all(axis=1), "evaluations"] = math.nan
    return table


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return _format(float(values.iloc[0]))
    return f"{_format(float(values.mean()))} ± {_format(float(values.std(ddof=1)))}"


def _metrics_present(group: pd.DataFrame) -> list[str]:
    ok = group[group["status"] == "ok"]
    return [m for m in ERROR_METRICS if ok[m].notna().any()]


def _budget_stats(group: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (method, budget) of one (model, target): mean error and mean costs over ok seeds."""
    ok = group[group["status"] == "ok"]
    return (ok.groupby(["method", "budget"], sort=True)[[metric, "wall_s", "evaluations"]]
            .mean().reset_index())


def _cost_to_reach(group: pd.DataFrame, metric: str, epsilon: float) -> dict[str, tuple[str, float]]:
    """method -> (text, wall seconds): the cheapest budget whose mean error over seeds is ≤ ε."""
    stats = _budget_stats(group, metric)
    out = {}
    for method, rows in stats.groupby("method", sort=False):
        rows = rows.dropna(subset=[metric])
        if rows.empty:
            continue
        reached = rows[rows[metric] <= epsilon].sort_values("wall_s")
        if len(reached):
            best = reached.iloc[0]
            out[method] = (f"{_format(float(best['wall_s']))} s, {_format(float(best['evaluations']))} evals "
                           f"(budget {int(best['budget'])})", float(best["wall_s"]))
        else:
            best = rows.sort_values(metric).iloc[0]
            out[method] = (f"not reached (best {_format(float(best[metric]))} at budget {int(best['budget'])})",
                           math.inf)
    return out


def _slope(rows: pd.DataFrame, metric: str) -> float:
    """Least-squares slope of log error against log budget over a method's budgets (budget,
    not wall seconds: fixed overheads make wall time a noisy proxy at small budgets)."""
    rows = rows[rows[metric] > _EXACT_TOLERANCE]
    if rows["budget"].nunique() < 2:
        return math.nan
    return float(np.polyfit(np.log(rows["budget"].astype(float)), np.log(rows[metric]), 1)[0])


def _range(values: pd.Series, unit: str) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    low, high = float(values.min()), float(values.max())
    return f"{_format(low)} {unit}" if low == high else f"{_format(low)}–{_format(high)} {unit}"


def measured_method_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: exactness, cost and best-for, each a sentence built from the
    measurements over every (model, target) in ``table``."""
    table = _with_derived(table)
    groups = list(table.groupby(["model", "target"], sort=True))
    rows = []
    for method in dict.fromkeys(table.sort_values("method", key=_method_order, kind="stable")["method"]):
        mine = table[table["method"] == method]
        ok = mine[mine["status"] == "ok"]
        exactness: list[str] = []
        best_for: dict[str, list[str]] = {}
        reached_count = tried = 0
        exact_everywhere = len(ok) > 0
        slopes = []
        for (model, target), group in groups:
            name = f"{model}/{target}"
            metrics = _metrics_present(group)
            my_ok = ok[(ok["model"] == model) & (ok["target"] == target)]
            if my_ok.empty:
                continue
            for metric in metrics:
                values = my_ok[metric].dropna()
                if values.empty:
                    continue
                tried += 1
                exact_everywhere &= bool((values <= _EXACT_TOLERANCE).all())
                costs = _cost_to_reach(group, metric, EPSILONS[metric])
                reached_count += costs.get(method, ("", math.inf))[1] < math.inf
                cheapest = min(costs.items(), key=lambda item: item[1][1])
                if cheapest[0] == method and cheapest[1][1] < math.inf:
                    best_for.setdefault(name, []).append(metric)
                slopes.append(_slope(_budget_stats(group[group["method"] == method], metric), metric))
        if not tried:
            reasons = sorted({m for m in mine["message"] if m})
            rows.append({"method": method, "exactness": "no scored cell",
                         "cost": "—", "best for": "; ".join(reasons)[:160] or "—"})
            continue
        if exact_everywhere:
            exactness.append("exact: every error 0")
        else:
            exactness.append(f"reached ε on {reached_count} of {tried} (target, metric) pairs")
            finite = [s for s in slopes if math.isfinite(s)]
            if finite:
                median = float(np.median(finite))
                trend = ("error falls with cost" if median < -0.1 else
                         "error flat in cost (a bias the budget does not remove)" if median < 0.1 else
                         "error grows with cost")
                exactness.append(f"{trend}: median log-log slope {median:+.2f}")
        cost = "; ".join(part for part in (_range(ok["wall_s"], "s"), _range(ok["evaluations"], "evaluations"))
                         if part)
        failed = int((mine["status"] == "failed").sum())
        not_applicable = sorted({f"{r.model}/{r.target}" for r in mine[mine["status"] == "not_applicable"].itertuples()})
        notes = (["cheapest to ε on " + "; ".join(f"{name} ({', '.join(metrics)})" for name, metrics in best_for.items())]
                 if best_for else ["never the cheapest to ε"])
        if not_applicable:
            notes.append("not applicable on " + ", ".join(not_applicable))
        if failed:
            exactness.append(f"{failed} failed cell(s)")
        rows.append({"method": method, "exactness": "; ".join(exactness), "cost": cost, "best for": "; ".join(notes)})
    return pd.DataFrame(rows, columns=["method", "exactness", "cost", "best for"])


def _markdown_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return lines + [""]


def _plot_name(model: str, target: str) -> str:
    return f"{model}_{target}.png"


def write_plots(table: pd.DataFrame, plots: Path) -> list[Path]:
    """One PNG per (model, target): rows = error metrics, columns = cost axes; log-log; one
    line per method (median over seeds) with a band (min–max over seeds). A method whose
    error is 0 (exact) cannot sit on a log axis: it is drawn as a vertical line at its cost."""
    # Figures drawn without pyplot: no global backend switch (which would silently stop
    # inline plots in a Jupyter session that calls this) and nothing left open.
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    table = _with_derived(table)
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    methods = list(dict.fromkeys(table["method"]))
    colours = {m: colormaps["tab10"](i % 10) for i, m in enumerate(methods)}
    for (model, target), group in table.groupby(["model", "target"], sort=True):
        metrics = _metrics_present(group)
        if not metrics:
            continue
        ok = group[group["status"] == "ok"]
        figure = Figure(figsize=(11, 3.4 * len(metrics)))
        axes = figure.subplots(len(metrics), len(COST_AXES), squeeze=False)
        for i, metric in enumerate(metrics):
            for j, (cost, cost_label) in enumerate(COST_AXES.items()):
                axis = axes[i][j]
                drawn = False
                for method in methods:
                    rows = ok[(ok["method"] == method) & ok[metric].notna() & (ok[cost] > 0)]
                    if rows.empty:
                        continue
                    by = rows.groupby("budget")
                    x = by[cost].median()
                    if (rows[metric] <= _EXACT_TOLERANCE).all():
                        axis.axvline(float(x.median()), color=colours[method], linestyle=":",
                                     label=f"{method} (error 0)")
                        drawn = True
                        continue
                    positive = rows[rows[metric] > _EXACT_TOLERANCE]
                    by = positive.groupby("budget")
                    x, y = by[cost].median(), by[metric].median()
                    axis.plot(x.values, y.values, marker="o", color=colours[method], label=method)
                    if by.size().max() > 1:
                        axis.fill_between(x.values, by[metric].min().values, by[metric].max().values,
                                          color=colours[method], alpha=0.2, linewidth=0)
                    drawn = True
                if metric in EPSILONS:
                    axis.axhline(EPSILONS[metric], color="grey", linewidth=0.8, linestyle="--", label="ε")
                if drawn:
                    axis.set_xscale("log")
                    axis.set_yscale("log")
                axis.set_xlabel(cost_label)
                axis.set_ylabel(ERROR_METRICS[metric])
                axis.grid(True, which="major", alpha=0.3)
                axis.legend(fontsize=7, loc="best")
        figure.suptitle(f"{model} / {target}: error against cost (median over seeds, band min–max)")
        figure.tight_layout()
        path = plots / _plot_name(model, target)
        figure.savefig(path, dpi=80)
        written.append(path)
    return written


def _method_order(methods: pd.Series) -> pd.Series:
    """Registry order (``list``'s order); methods no longer registered go last."""
    from inference_comparisons.methods import available_methods

    order = {name: i for i, name in enumerate(available_methods())}
    return methods.map(lambda name: order.get(name, len(order)))


def _section(model: str, target: str, group: pd.DataFrame) -> list[str]:
    lines = [f"## {model} / {target}", ""]
    metrics = _metrics_present(group)
    header = ["method", "budget", "unit", "ok/seeds", *[f"{m}" for m in metrics],
              "wall_s", "density_evals", "grad_evals", "khat", "notes"]
    rows = []
    ordered = group.assign(_order=_method_order(group["method"])).sort_values(["_order", "budget"], kind="stable")
    for (_, method, budget), cells in ordered.groupby(["_order", "method", "budget"], sort=False):
        ok = cells[cells["status"] == "ok"]
        statuses = sorted(set(cells["status"]) - {"ok"})
        notes = "; ".join(sorted({m for m in cells["message"] if m}))
        if statuses:
            notes = "/".join(statuses) + (f": {notes}" if notes else "")
        rows.append([method, _format(budget), cells["budget_unit"].iloc[0], f"{len(ok)}/{len(cells)}",
                     *[_mean_sd(ok[m]) for m in metrics], _mean_sd(ok["wall_s"]), _mean_sd(ok["density_evals"]),
                     _mean_sd(ok["grad_evals"]), _mean_sd(pd.to_numeric(ok["khat"], errors="coerce")),
                     notes[:200]])
    lines += _markdown_table(header, rows)
    if metrics:
        lines += ["Cost to reach ε (cheapest budget whose mean error over seeds is at most ε):", ""]
        reached = {m: _cost_to_reach(group, m, EPSILONS[m]) for m in metrics}
        methods = list(dict.fromkeys(method for per in reached.values() for method in per))
        lines += _markdown_table(["method", *[f"{m} ≤ {EPSILONS[m]:g}" for m in metrics]],
                                 [[method, *[reached[m].get(method, ("", 0))[0] for m in metrics]]
                                  for method in methods])
        lines += [f"![{model} / {target}](plots/{_plot_name(model, target)})", ""]
    return lines


def write_report(table: pd.DataFrame, out: Path) -> None:
    """``results.csv`` (one row per cell), ``report.md`` and ``plots/`` from ``table``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    table = _with_derived(table.assign(message=table["message"].fillna("")))
    epsilons = "; ".join(f"`{m}` ≤ {e:g}" for m, e in EPSILONS.items())
    lines = ["# Exactness against cost", "",
             f"{len(table)} cells: " + ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()) + ".",
             "Errors are against each target's reference (exact where `reference_exact`), in absolute value: "
             "`log_evidence_error` in nats (SVI's ELBO is a bound, so its signed error is negative), "
             "`mean_error` in posterior standard deviations, `sd_error` as |log(sd ratio)|, `local_tv` as a "
             "total-variation distance. Each entry is mean ± sd over the seeds whose cell is `ok`; costs are "
             "wall seconds of the inference call (torch on one thread) and counted evaluations.",
             "", f"ε per metric: {epsilons} (the reasons are in `report.py`'s `EPSILONS`).", "",
             "## Methods, as measured", "",
             "Generated from the cells below: *exactness* counts the (target, metric) pairs where the method "
             "reached ε and gives the median log-log slope of error against budget "
             "(−0.5 is Monte Carlo's rate); *best for* names where it was the cheapest to reach ε.", ""]
    measured = measured_method_table(table)
    lines += _markdown_table(measured.columns, measured.itertuples(index=False))
    for (model, target), group in table.groupby(["model", "target"], sort=True):
        lines += _section(model, target, group)
    write_plots(table, out / "plots")
    (out / "report.md").write_text("\n".join(lines))


def report_from_store(out: Path | str) -> pd.DataFrame:
    """Rebuild ``results.csv``, ``report.md`` and ``plots/`` from ``out/results.sqlite`` alone;
    return the stored table. A missing store is a ``ValueError``."""
    from inference_comparisons.store import STORE_NAME, ResultStore
    from inference_comparisons.sweep import COLUMNS

    out = Path(out)
    path = out / STORE_NAME
    if not path.is_file():
        raise ValueError(f"no results in {out}: {path} does not exist")
    with ResultStore(path, COLUMNS) as store:
        table = store.table()
    write_report(table, out)
    return table
