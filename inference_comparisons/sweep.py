"""Grids of cells (model, target, method, budget, seed), run and tabulated.

A cell never stops the sweep: a method that cannot run on a target gives a
``not_applicable`` row with the reason, and a cell that raises or returns non-finite
results gives a ``failed`` row with the message.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd
import torch

import zoo
from zoo.base import TARGETS, Reference, ZooModel

from inference_comparisons.base import PROFILES, NotApplicable
from inference_comparisons.methods import available_methods, get_method
from inference_comparisons.metrics import METRIC_COLUMNS, score
from inference_comparisons.runner import check_budget, run_inference

__all__ = ["COLUMNS", "Cell", "DEFAULT_NUM_DATAPOINTS", "compare", "load_data", "plan", "run_cell"]

#: Data points of the default simulated dataset: the issue's "200 points", where prior
#: importance sampling already collapses on the mixture.
DEFAULT_NUM_DATAPOINTS = 200
#: Method seeds vary; the data are always drawn with this seed, so every cell of a model
#: sees the same data and the stored reference applies.
DATA_SEED = 0

COLUMNS: tuple[str, ...] = (
    "model", "dataset", "target", "method", "budget", "budget_unit", "seed", "status", "message",
    "wall_s", "density_evals", "grad_evals", *METRIC_COLUMNS,
)


@dataclass(frozen=True)
class Cell:
    model: str
    target: str
    method: str
    budget: int | None
    seed: int
    dataset: str = "simulated"


def load_data(model: ZooModel, dataset: str, num_datapoints: int = DEFAULT_NUM_DATAPOINTS) -> torch.Tensor:
    """The data a sweep runs on: a simulation from the model, or a shipped dataset."""
    if dataset == "simulated":
        return model.simulate(num_datapoints=num_datapoints, seed=DATA_SEED).data
    if dataset not in model.info.datasets:
        raise ValueError(f"{model.name}: unknown dataset {dataset!r}; accepted: {', '.join(model.info.datasets)}")
    return model.load_dataset(dataset)


def _names(given: Sequence[str] | None, available: Sequence[str], kind: str) -> list[str]:
    if not given:
        return list(available)
    unknown = [g for g in given if g not in available]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; available: {', '.join(available)}")
    return list(given)


def plan(models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
         targets: Sequence[str] | None = None, seeds: Iterable[int] = (0,), budgets: str = "default",
         dataset: str = "simulated") -> list[Cell]:
    """Every cell of a sweep, validated before any work starts."""
    if budgets not in PROFILES:
        raise ValueError(f"unknown budget profile {budgets!r}; accepted: {', '.join(PROFILES)}")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {seeds!r}")
    wanted_targets = _names(targets, TARGETS, "target(s)")
    cells = []
    for model_name in _names(models, zoo.available_models(), "model(s)"):
        for target in (t for t in zoo.get_model(model_name).info.targets if t in wanted_targets):
            for method_name in _names(methods, available_methods(), "method(s)"):
                for budget in get_method(method_name).ladders[budgets]:
                    cells.extend(Cell(model_name, target, method_name, budget, s, dataset) for s in seeds)
    return cells


def run_cell(cell: Cell, model: ZooModel | None = None, data: torch.Tensor | None = None,
             reference: Reference | None = None) -> dict[str, Any]:
    """One result row; never raises for a failure of the method itself."""
    model = model if model is not None else zoo.get_model(cell.model)
    data = data if data is not None else load_data(model, cell.dataset)
    method = get_method(cell.method)
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update(model=cell.model, dataset=cell.dataset, target=cell.target, method=cell.method,
               budget=cell.budget, budget_unit=method.budget_unit, seed=cell.seed, message="")
    try:
        reference = reference if reference is not None else model.reference(data, target=cell.target)
        result = run_inference(model, data, cell.method, check_budget(cell.budget), cell.seed, cell.target)
        row.update(score(result, reference))
        row.update(wall_s=result.cost.wall_s, density_evals=result.cost.density_evals,
                   grad_evals=result.cost.grad_evals, status="ok")
        if not any(math.isfinite(row[k]) for k in ("log_evidence", "mean_error", "local_tv")):
            row.update(status="failed", message="the method returned no finite estimate")
    except NotApplicable as reason:
        row.update(status="not_applicable", message=str(reason))
    except Exception as error:  # noqa: BLE001 - a failed cell is data, the sweep goes on
        last = traceback.extract_tb(error.__traceback__)[-1]
        row.update(status="failed", message=f"{type(error).__name__}: {error} ({Path(last.filename).name}:{last.lineno})")
    return row


def _iterate(cells: Sequence[Cell]) -> Iterator[dict[str, Any]]:
    """Run cells in order, building each model, dataset and reference once."""
    cache: dict[tuple, Any] = {}
    for cell in cells:
        key = (cell.model, cell.dataset)
        if key not in cache:
            model = zoo.get_model(cell.model)
            cache[key] = (model, load_data(model, cell.dataset))
        model, data = cache[key]
        ref_key = key + (cell.target,)
        if ref_key not in cache:
            try:
                cache[ref_key] = model.reference(data, target=cell.target)
            except LookupError:
                cache[ref_key] = None  # run_cell records the lookup error on each cell
        yield run_cell(cell, model, data, cache[ref_key])


def compare(models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
            targets: Sequence[str] | None = None, seeds: Iterable[int] = (0,), budgets: str = "default",
            dataset: str = "simulated", out: str | Path | None = None) -> pd.DataFrame:
    """Run a sweep and return its tidy table (one row per cell, columns :data:`COLUMNS`).

    With ``out``, also writes ``results.csv`` and ``report.md`` there.
    """
    from inference_comparisons.report import write_report

    cells = plan(models, methods, targets, seeds, budgets, dataset)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(list(_iterate(cells)), columns=list(COLUMNS))
    if out is not None:
        write_report(table, out)
    return table
