"""The project's picture: log error against log cost, one line per method over its budgets,
a band over seeds; one PNG per problem (model, dataset, target)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from inference_comparisons.report.measures import (EPSILONS, ERROR_METRICS, EXACT_TOLERANCE, Problem, metrics_present,
                                                   problems, with_derived)

__all__ = ["COST_AXES", "plot_name", "write_plots"]

#: Cost axes of the plots: wall seconds, and counted model evaluations.
COST_AXES = {"wall_s": "wall seconds (one thread)", "evaluations": "density + gradient evaluations"}


def plot_name(problem: Problem) -> str:
    return f"{problem.file_stem}.png"


def write_plots(table: pd.DataFrame, plots: Path) -> list[Path]:
    """One PNG per problem (model, dataset, target): rows = error metrics, columns = cost axes; log-log; one
    line per method (median over seeds) with a band (min–max over seeds). A method whose
    error is 0 (exact) cannot sit on a log axis: it is drawn as a vertical line at its cost."""
    # Figures drawn without pyplot: no global backend switch (which would silently stop
    # inline plots in a Jupyter session that calls this) and nothing left open.
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    table = with_derived(table)
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    methods = list(dict.fromkeys(table["method"]))
    colours = {m: colormaps["tab10"](i % 10) for i, m in enumerate(methods)}
    # Ten colours go round more than ten methods: each round of them gets its own marker and
    # line style, so that no two methods look alike.
    looks = {m: dict(marker="osD^v"[i // 10 % 5], linestyle=("-", "--", "-.", ":", "-")[i // 10 % 5])
             for i, m in enumerate(methods)}
    for problem, group in problems(table):
        metrics = metrics_present(group)
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
                    if (rows[metric] <= EXACT_TOLERANCE).all():
                        axis.axvline(float(x.median()), color=colours[method], linestyle=":",
                                     label=f"{method} (error 0)")
                        drawn = True
                        continue
                    positive = rows[rows[metric] > EXACT_TOLERANCE]
                    by = positive.groupby("budget")
                    x, y = by[cost].median(), by[metric].median()
                    axis.plot(x.values, y.values, color=colours[method], label=method, **looks[method])
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
        figure.suptitle(f"{problem.title}: error against cost (median over seeds, band min–max)")
        figure.tight_layout()
        path = plots / plot_name(problem)
        figure.savefig(path, dpi=80)
        written.append(path)
    return written
