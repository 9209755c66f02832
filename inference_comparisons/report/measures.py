"""What the report measures, computed from the table alone: summaries over seeds, the cost
for each method to reach an error ε, and the *measured* method table (exactness, cost, best
for), whose wording is generated from the numbers, never written per method."""

from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple

import numpy as np
import pandas as pd

from inference_comparisons.methods import available_methods

__all__ = ["EPSILONS", "ERROR_METRICS", "EXACT_TOLERANCE", "SUMMARY_COLUMNS", "Problem", "cost_to_reach",
           "format_value", "markdown_table", "mean_sd", "measured_method_table", "method_order", "metrics_present",
           "problems", "summary", "with_derived"]

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

#: Errors at or below this are exact up to floating point (the exact method's 0).
EXACT_TOLERANCE = 1e-9


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


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    """A Markdown table (a ``|`` inside a value escaped), and the blank line after it."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return lines + [""]


def format_value(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        return f"{value:.3g}"
    return str(value)


def with_derived(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for column in (*ERROR_METRICS, "wall_s", "density_evals", "grad_evals"):
        table[column] = pd.to_numeric(table.get(column, math.nan), errors="coerce")
    for column in ERROR_METRICS:
        table[column] = table[column].abs()
    table["evaluations"] = table["density_evals"].fillna(0) + table["grad_evals"].fillna(0)
    table.loc[table[["density_evals", "grad_evals"]].isna().all(axis=1), "evaluations"] = math.nan
    return table


def mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return format_value(float(values.iloc[0]))
    return f"{format_value(float(values.mean()))} ± {format_value(float(values.std(ddof=1)))}"


def metrics_present(group: pd.DataFrame) -> list[str]:
    ok = group[group["status"] == "ok"]
    return [m for m in ERROR_METRICS if ok[m].notna().any()]


def _budget_stats(group: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (method, budget) of one (model, target): mean error and mean costs over ok seeds."""
    ok = group[group["status"] == "ok"]
    return (ok.groupby(["method", "budget"], sort=True)[[metric, "wall_s", "evaluations"]]
            .mean().reset_index())


def cost_to_reach(group: pd.DataFrame, metric: str, epsilon: float) -> dict[str, tuple[str, float]]:
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
            out[method] = (f"{format_value(float(best['wall_s']))} s, {format_value(float(best['evaluations']))} evals "
                           f"(budget {int(best['budget'])})", float(best["wall_s"]))
        else:
            best = rows.sort_values(metric).iloc[0]
            out[method] = (f"not reached (best {format_value(float(best[metric]))} at budget {int(best['budget'])})",
                           math.inf)
    return out


def _slope(rows: pd.DataFrame, metric: str) -> float:
    """Least-squares slope of log error against log budget over a method's budgets (budget,
    not wall seconds: fixed overheads make wall time a noisy proxy at small budgets)."""
    rows = rows[rows[metric] > EXACT_TOLERANCE]
    if rows["budget"].nunique() < 2:
        return math.nan
    return float(np.polyfit(np.log(rows["budget"].astype(float)), np.log(rows[metric]), 1)[0])


def _range(values: pd.Series, unit: str) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    low, high = float(values.min()), float(values.max())
    return f"{format_value(low)} {unit}" if low == high else f"{format_value(low)}–{format_value(high)} {unit}"


class Problem(NamedTuple):
    """One inference problem of a table: a model's target on one dataset."""

    model: str
    dataset: str
    target: str

    @property
    def title(self) -> str:
        """``model / target`` on the default simulated data, ``model / dataset / target`` otherwise."""
        return " / ".join(p for p in (self.model, None if self.dataset == "simulated" else self.dataset, self.target) if p)

    @property
    def file_stem(self) -> str:
        return self.title.replace(" / ", "_").replace(":", "-")


def problems(table: pd.DataFrame) -> list[tuple[Problem, pd.DataFrame]]:
    """The table's rows grouped by problem, sorted: one report section and one plot each (two
    datasets of one model, such as two beta-VAE checkpoints, are two problems)."""
    return [(Problem(*key), group) for key, group in table.groupby(["model", "dataset", "target"], sort=True)]


def measured_method_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: exactness, cost and best-for, each a sentence built from the
    measurements over every (model, target) in ``table``."""
    table = with_derived(table)
    groups = problems(table)
    rows = []
    for method in dict.fromkeys(table.sort_values("method", key=method_order, kind="stable")["method"]):
        mine = table[table["method"] == method]
        ok = mine[mine["status"] == "ok"]
        exactness: list[str] = []
        best_for: dict[str, list[str]] = {}
        reached_count = tried = 0
        exact_everywhere = len(ok) > 0
        slopes = []
        for problem, group in groups:
            name = problem.title.replace(" / ", "/")
            metrics = metrics_present(group)
            my_ok = ok.loc[ok.index.intersection(group.index)]
            if my_ok.empty:
                continue
            for metric in metrics:
                values = my_ok[metric].dropna()
                if values.empty:
                    continue
                tried += 1
                exact_everywhere &= bool((values <= EXACT_TOLERANCE).all())
                costs = cost_to_reach(group, metric, EPSILONS[metric])
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


def method_order(methods: pd.Series) -> pd.Series:
    """Registry order (``list``'s order); methods no longer registered go last."""
    order = {name: i for i, name in enumerate(available_methods())}
    return methods.map(lambda name: order.get(name, len(order)))
