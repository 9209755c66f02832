"""Tables from the tidy results: the printed summary, ``results.csv`` and ``report.md``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

__all__ = ["SUMMARY_COLUMNS", "summary", "write_report"]

#: What the printed table shows: exactness, cost and the diagnostics that explain them.
SUMMARY_COLUMNS = ("model", "target", "method", "budget", "budget_unit", "status", "wall_s", "grad_evals",
                   "density_evals", "log_evidence_error", "mean_error", "sd_error", "local_tv", "khat",
                   "ess_min", "rhat_max", "divergences")


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
    return pd.DataFrame(rows)


def _format(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def write_report(table: pd.DataFrame, out: Path) -> None:
    """``results.csv`` (one row per cell) and ``report.md`` (one table per model and target)."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    summarised = summary(table)
    lines = ["# Exactness against cost", "",
             "Errors are against each target's reference (exact where `reference_exact`); "
             "`log_evidence_error` is in nats (SVI's ELBO is a bound, so negative); `mean_error` is "
             "in posterior standard deviations; numbers are means over seeds.", ""]
    for (model, target), group in summarised.groupby(["model", "target"], sort=False):
        lines += [f"## {model} / {target}", ""]
        columns = [c for c in SUMMARY_COLUMNS if c not in ("model", "target")] + ["message"]
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for _, row in group.iterrows():
            lines.append("| " + " | ".join(_format(row[c]) for c in columns) + " |")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
