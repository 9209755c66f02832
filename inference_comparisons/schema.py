"""The row schema: a cell, and the columns of its result row. Below the sweep, the store and
the report, which all speak it (ARCHITECTURE.md §4)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["COLUMNS", "DIAGNOSTIC_COLUMNS", "METRIC_COLUMNS", "Cell", "empty_row"]

#: The exactness columns :func:`inference_comparisons.metrics.score` fills.
METRIC_COLUMNS: tuple[str, ...] = (
    "log_evidence", "log_evidence_se", "log_evidence_ref", "log_evidence_ref_se", "log_evidence_error",
    "mean_error", "sd_error", "mean_error_ref_se", "local_tv", "khat", "ess_min", "rhat_max", "divergences",
    "reference_exact",
)
#: ArviZ diagnostics of each cell's InferenceData kept in the table (the diagnostics package).
DIAGNOSTIC_COLUMNS: tuple[str, ...] = ("elpd_loo", "num_khat_above_0_7", "bfmi_min")
#: Every column of a result row, in table order.
COLUMNS: tuple[str, ...] = (
    "model", "dataset", "target", "method", "budget", "budget_unit", "seed", "status", "message",
    "wall_s", "density_evals", "grad_evals", *METRIC_COLUMNS, *DIAGNOSTIC_COLUMNS, "idata_path", "cell_s",
)


@dataclass(frozen=True)
class Cell:
    """One (model, target, method, budget, seed) run on one dataset: the unit of storage."""

    model: str
    target: str
    method: str
    budget: int | None
    seed: int
    dataset: str = "simulated"

    @property
    def key(self) -> str:
        """The cell's configuration as a file-name-safe string: the store's key (with the
        project version) and the name of its ``idata/<key>.nc``."""
        return f"{self.model}.{self.dataset}.{self.target}.{self.method}.{self.budget}.seed{self.seed}"

    @classmethod
    def of_row(cls, row: Any) -> "Cell":
        """The cell a result row belongs to."""
        return cls(row["model"], row["target"], row["method"], row["budget"], row["seed"], row["dataset"])


def empty_row(cell: Cell, budget_unit: str) -> dict[str, Any]:
    """A row of ``cell`` with every measured column NaN, ready to be filled."""
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update(model=cell.model, dataset=cell.dataset, target=cell.target, method=cell.method, budget=cell.budget,
               budget_unit=budget_unit, seed=cell.seed, message="", idata_path="")
    return row
