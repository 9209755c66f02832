"""Calibration in the report: from the store's ``sbc_ranks`` rows, a table of each
(model, target, method, budget) with its ECDF test's p-value and a verdict in words, and one
figure each of ECDF differences with their simultaneous 95% bands (Säilynoja, Bürkner &
Vehtari 2022), one panel per test quantity.

The verdict reads the ranks of the quantity that fails the test worst: ranks piled at both
ends (a ∪-shaped histogram) mean the truth falls outside the method's posterior too often,
so the posterior is overconfident; piled in the middle (∩), underconfident; tilted to one
side, biased. Which of these is measured by two z-scores against the uniform law: of the
share of ranks in the outer fifth, and of the mean rank.

A simulation run again at a raised budget (short of draws at the first) counts once, by its
last attempt; the table says how many were raised and to what budget.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference_comparisons.estimators.ecdf import combined_pvalue, ecdf_band, uniformity_pvalues
from inference_comparisons.report.measures import markdown_table
from inference_comparisons.store import decode_ranks

__all__ = ["CALIBRATION_KEY", "MISCALIBRATED_BELOW", "calibration_section", "calibration_table", "last_attempts",
           "write_calibration_plots"]

#: What one calibration is: the rows sharing these make one set of ranks.
CALIBRATION_KEY = ["model", "target", "method", "budget", "num_datapoints", "num_draws", "seed"]
#: The p-value below which the report calls a method miscalibrated.
MISCALIBRATED_BELOW = 0.01


def last_attempts(rows: pd.DataFrame) -> pd.DataFrame:
    """Each simulation's last attempt: its row at the largest ``run_budget`` (a row from
    before raised budgets ran at ``budget``), the latest finished of equals (a store's rows
    from before the simulation's streams were split, then its rerun), with ``run_budget``
    filled in."""
    run_budget = rows["run_budget"].fillna(rows["budget"]) if "run_budget" in rows else rows["budget"]
    order = ["run_budget", "finished_at"] if "finished_at" in rows else ["run_budget"]
    rows = rows.assign(run_budget=run_budget.astype(int)).sort_values(order, kind="stable")
    return rows.drop_duplicates([*CALIBRATION_KEY, "simulation"], keep="last")


def _ranks(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each quantity's ranks of the ``ok`` rows, ``(simulations, n)``, in simulation order."""
    return decode_ranks(rows[rows["status"] == "ok"].sort_values("simulation")["ranks"])


def _verdict(ranks: dict[str, np.ndarray], pvalues: dict[str, np.ndarray], num_draws: int, pvalue: float) -> str:
    if pvalue >= MISCALIBRATED_BELOW:
        return "no evidence of miscalibration"
    # The shape is read off the quantities of interest where one of them fails; the log
    # likelihood is read alone (its ranks mean something else) only when it alone fails.
    count = sum(p.size for p in pvalues.values())
    failing = [n for n in pvalues if n != "log_likelihood" and pvalues[n].min() * count < MISCALIBRATED_BELOW]
    name = min(failing or pvalues, key=lambda n: pvalues[n].min())
    j = int(pvalues[name].argmin())
    u = ranks[name][:, j] / num_draws
    z_edges = (np.mean((u < 0.1) | (u > 0.9)) - 0.2) / math.sqrt(0.16 / len(u))
    z_mean = (u.mean() - 0.5) / math.sqrt(1 / 12 / len(u))
    where = name if ranks[name].shape[1] == 1 else f"{name}[{j}]"
    if name == "log_likelihood":
        return ("the draws fit the data better than the truth does (log-likelihood ranks too low): "
                "posteriors too concentrated near the best fit" if z_mean < 0 else
                "the draws fit the data worse than the truth does (log-likelihood ranks too high): "
                "posteriors too diffuse or off target")
    if abs(z_edges) >= abs(z_mean):
        shape = ("overconfident: ∪-shaped ranks, the truth falls outside the posterior too often" if z_edges > 0
                 else "underconfident: ∩-shaped ranks, the posterior is wider than the truth's spread")
    else:
        shape = ("biased: the truth sits above the posterior too often (ranks too high)" if z_mean > 0
                 else "biased: the truth sits below the posterior too often (ranks too low)")
    return f"{shape} (worst on {where})"


def calibration_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per calibration: simulations finished and failed, how many were raised and
    the largest budget any ran at, the Bonferroni-adjusted smallest p-value over its scalar
    quantities, and the verdict."""
    out = []
    for key, group in last_attempts(rows).groupby(CALIBRATION_KEY, sort=True):
        ranks = _ranks(group)
        num_draws = int(key[CALIBRATION_KEY.index("num_draws")])
        pvalues = uniformity_pvalues(ranks, num_draws)
        pvalue = combined_pvalue(pvalues)
        statuses = group["status"].value_counts()
        verdict = (_verdict(ranks, pvalues, num_draws, pvalue) if ranks
                   else "; ".join(sorted(set(group["message"].fillna("")) - {""}))[:200] or "no simulation finished")
        out.append({**dict(zip(CALIBRATION_KEY, key)), "simulations": int(statuses.get("ok", 0)),
                    "failed": int(statuses.get("failed", 0)),
                    "raised": int((group["run_budget"] > group["budget"]).sum()),
                    "max_run_budget": int(group["run_budget"].max()), "p_value": pvalue, "verdict": verdict})
    return pd.DataFrame(out, columns=[*CALIBRATION_KEY, "simulations", "failed", "raised", "max_run_budget", "p_value",
                                      "verdict"])


def plot_name(key: tuple) -> str:
    model, target, method, budget, num_datapoints, num_draws, seed = key
    return f"calibration_{model}_{target}_{method}_{budget}_n{num_datapoints}_seed{seed}.png"


def write_calibration_plots(rows: pd.DataFrame, plots: Path) -> dict[tuple, Path]:
    """One PNG per calibration: a panel per test quantity, the ECDF difference of each of its
    scalars' ranks (thin lines) inside the simultaneous 95% band."""
    from matplotlib.figure import Figure

    plots.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, group in last_attempts(rows).groupby(CALIBRATION_KEY, sort=True):
        ranks = _ranks(group)
        if not ranks:
            continue
        num_draws = int(key[CALIBRATION_KEY.index("num_draws")])
        figure = Figure(figsize=(3.2 * len(ranks), 2.8), layout="constrained")
        for axes, (name, values) in zip(figure.subplots(1, len(ranks), squeeze=False)[0], ranks.items()):
            band = ecdf_band(values[:, 0], num_draws)
            axes.fill_between(band.grid, band.lower, band.upper, color="0.85", step="mid", label="95% band")
            for column in values.T:
                axes.plot(band.grid, ecdf_band(column, num_draws).difference, lw=0.8, alpha=0.7,
                          color="C3" if values.shape[1] == 1 else None)
            axes.axhline(0, color="k", lw=0.5)
            axes.set_title(f"{name} ({values.shape[1]} scalar{'s' * (values.shape[1] > 1)})", fontsize=9)
            axes.set_xlabel("normalised rank")
        figure.axes[0].set_ylabel("ECDF − uniform")
        model, target, method, budget = key[:4]
        raised = group[(group["status"] == "ok") & (group["run_budget"] > group["budget"])]["run_budget"]
        figure.suptitle(f"{model} / {target} / {method} @ {budget}: {len(values)} simulations"
                        + (f" ({len(raised)} raised, up to {raised.max()})" if len(raised) else ""), fontsize=10)
        path = plots / plot_name(key)
        figure.savefig(path, dpi=100)
        written[key] = path
    return written


def _budget(row: Any) -> str:
    """A calibration's budget, and how far its simulations short of draws were raised."""
    return f"{row.budget}" + (f" ({row.raised} raised, up to {row.max_run_budget})" if row.raised else "")


def calibration_section(rows: pd.DataFrame, plots: Path) -> list[str]:
    """The ``## Calibration`` section of ``report.md``, its figures written to ``plots``."""
    table = calibration_table(rows)
    figures = write_calibration_plots(rows, plots)
    lines = ["## Calibration", "",
             "Simulation-based calibration (`python -m inference_comparisons calibrate`): for each simulated "
             "dataset, the rank of the true value of every test quantity among the method's independent "
             "posterior draws. A calibrated method gives uniform ranks; the p-value is the ECDF test's "
             f"(Säilynoja et al. 2022), the smallest over all scalar quantities times their number, and a "
             f"p-value below {MISCALIBRATED_BELOW} is called miscalibrated. A simulation short of independent "
             "draws at the budget (an ESS too small) fails, or, with `--max-budget`, is run again at the budget "
             "its ESS asks for (a power of two times it, up to that ceiling) while its ESS grows; the budget "
             "column says how many were raised, and how far.", ""]
    header = ["model", "target", "method", "budget", "data points", "simulations", "failed", "p-value", "verdict"]
    body = [[r.model, r.target, r.method, _budget(r), r.num_datapoints, r.simulations, r.failed,
             f"{r.p_value:.3g}", r.verdict] for r in table.itertuples()]
    lines += markdown_table(header, body)
    bad = table[table["p_value"] < MISCALIBRATED_BELOW]
    if len(bad):
        lines += ["Miscalibrated: " + "; ".join(f"**{r.method}** on {r.model}/{r.target} at {r.budget} ({r.verdict})"
                                                for r in bad.itertuples()) + ".", ""]
    lines += _failures(rows)
    for key, path in figures.items():
        lines += [f"![{' / '.join(map(str, key[:4]))}](plots/{path.name})", ""]
    return lines


def _failures(rows: pd.DataFrame) -> list[str]:
    """Each failed simulation (by its last attempt) with its message, folded away: why the
    table's ``failed`` are not ranked (an ESS too small, and R-hat saying whether more draws
    would mend it)."""
    failed = last_attempts(rows)
    failed = failed[failed["status"] == "failed"]
    if not len(failed):
        return []
    lines = ["<details><summary>Failed simulations, with their messages</summary>", ""]
    for key, group in failed.groupby(CALIBRATION_KEY, sort=True):
        lines.append(f"- {' / '.join(map(str, key[:3]))} at {key[3]}:")
        lines += [f"  - simulation {r.simulation} (budget {r.run_budget}): {r.message}"
                  for r in group.sort_values("simulation").itertuples()]
    return lines + ["", "</details>", ""]
