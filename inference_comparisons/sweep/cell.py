"""Running one cell in a worker: the method on its target, scored against the reference,
its InferenceData written, its row returned to the driver.

A cell never stops the sweep: a method that cannot run on a target gives a
``not_applicable`` row with the reason; a cell that raises, returns no finite estimate or
hits a divergence storm (more than half of its draws divergent) gives a ``failed`` row with
the message.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import zoo
from zoo.base import Reference, Target, ZooModel

from inference_comparisons.base import InferenceResult, NotApplicable, ResultKind
from inference_comparisons.methods import get_method
from inference_comparisons.metrics import score
from inference_comparisons.runner import run_on_target
from inference_comparisons.schema import DIAGNOSTIC_COLUMNS, Cell, empty_row
from inference_comparisons.sweep.driver import claimed
from inference_comparisons.sweep.plan import load_data

__all__ = ["DIVERGENCE_STORM_FRACTION", "DiskFull", "error_message", "execute_cell", "lost_row", "run_cell"]

#: A cell whose MCMC draws are divergent more often than this is failed, not scored: its
#: moments describe the sampler's failure, not the posterior.
DIVERGENCE_STORM_FRACTION = 0.5


class DiskFull(OSError):
    """The disk holding a sweep's output is full: the sweep stops (every next cell would fail
    too) and says where, after removing what it was writing."""

    def __init__(self, directory: str) -> None:
        free = shutil.disk_usage(directory).free / 2**20
        super().__init__(errno.ENOSPC, f"the disk holding {directory} is full ({free:.0f} MB free): free some "
                                       f"space (a cell's InferenceData takes a few MB) and rerun the same "
                                       f"command to resume")

    def __reduce__(self) -> tuple:  # pickled from a worker to the driver with its message
        return (_disk_full_again, (self.strerror,))

    def __str__(self) -> str:
        return str(self.strerror)


def _disk_full_again(message: str) -> DiskFull:
    error = DiskFull.__new__(DiskFull)
    OSError.__init__(error, errno.ENOSPC, message)
    return error


def _divergence_storm(result: InferenceResult) -> str | None:
    divergences = result.diagnostics.divergences
    if result.kind is not ResultKind.MCMC or not math.isfinite(divergences):
        return None
    if result.num_draws and divergences > DIVERGENCE_STORM_FRACTION * result.num_draws:
        return (f"divergence storm: {int(divergences)} of {result.num_draws} draws divergent "
                f"(> {DIVERGENCE_STORM_FRACTION:.0%})")
    return None


def _write_idata(cell: Cell, result: InferenceResult, problem: Target, data: torch.Tensor,
                 out: Path) -> dict[str, Any]:
    """Build the cell's InferenceData, add its diagnostics columns, write it atomically."""
    from inference_comparisons.diagnostics import diagnostics_columns, save_inference_data, to_inference_data

    idata = to_inference_data(result, problem, data)
    columns = diagnostics_columns(idata)
    relative = Path("idata") / f"{cell.key}.nc"
    final = out / relative
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        save_inference_data(idata, temporary)
        os.replace(temporary, final)  # readers see the whole file or none of it
    except OSError as error:
        temporary.unlink(missing_ok=True)  # half a file helps nobody, and fills the disk
        if error.errno == errno.ENOSPC:
            raise DiskFull(str(out)) from None
        raise
    return {**{c: columns.get(c, math.nan) for c in DIAGNOSTIC_COLUMNS}, "idata_path": str(relative)}


def error_message(error: BaseException) -> str:
    """``Type: message (file:line)`` of where an exception was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def run_cell(cell: Cell, model: ZooModel | None = None, data: torch.Tensor | None = None,
             reference: Reference | None = None, out: Path | str | None = None) -> dict[str, Any]:
    """One result row; never raises for a failure of the method itself. With ``out``, the
    cell's InferenceData goes to ``out/idata/<cell.key>.nc`` and its diagnostics into the row."""
    model = model if model is not None else zoo.get_model(cell.model).for_dataset(cell.dataset)
    data = data if data is not None else load_data(model, cell.dataset)
    method = get_method(cell.method)
    row = empty_row(cell, method.budget_unit)
    try:
        problem = model.target(data, cell.target)
        reason = method.not_applicable(problem)
        if reason is not None:  # before the reference: a missing reference is not the reason
            raise NotApplicable(reason)
        reference = reference if reference is not None else model.reference(data, target=cell.target)
        result = run_on_target(method, problem, cell.budget, cell.seed)
        row.update(score(result, reference))
        row.update(wall_s=result.cost.wall_s, density_evals=result.cost.density_evals,
                   grad_evals=result.cost.grad_evals, status="ok", message=result.note)
        storm = _divergence_storm(result)
        if not any(math.isfinite(row[k]) for k in ("log_evidence", "mean_error", "local_tv")):
            row.update(status="failed", message="the method returned no finite estimate")
        elif storm:
            row.update(status="failed", message=storm)
    except NotApplicable as reason:
        row.update(status="not_applicable", message=str(reason))
        return row
    except Exception as error:  # noqa: BLE001 - a failed cell is data, the sweep goes on
        row.update(status="failed", message=error_message(error))
        return row
    if out is not None:
        try:
            row.update(_write_idata(cell, result, problem, data, Path(out)))
        except DiskFull:
            raise
        except Exception as error:  # noqa: BLE001 - the scores stand; say why there is no file
            row["message"] = "; ".join(m for m in (row["message"], f"no InferenceData: {error_message(error)}") if m)
    return row


@lru_cache(maxsize=1)
def _warm_up() -> None:
    """Import, once per worker, what methods import lazily (ArviZ takes seconds), so that
    the first cell a fresh worker runs is not charged for it in ``wall_s``."""
    from inference_comparisons import diagnostics  # noqa: F401
    from inference_comparisons.estimators.weights import psis_khat

    psis_khat(torch.linspace(-1.0, 0.0, 100))  # imports ArviZ, and its first PSIS fit is slow


@lru_cache(maxsize=16)
def _model_and_data(model_name: str, dataset: str) -> tuple[ZooModel, torch.Tensor]:
    model = zoo.get_model(model_name).for_dataset(dataset)
    return model, load_data(model, dataset)


@lru_cache(maxsize=32)
def _reference(model_name: str, dataset: str, target: str) -> Reference | None:
    model, data = _model_and_data(model_name, dataset)
    try:
        return model.reference(data, target=target)
    except LookupError:
        return None  # run_cell records the lookup error on each cell


def execute_cell(cell: Cell, out: str | None = None, claims: str | None = None) -> dict[str, Any]:
    """What a worker runs: one cell, its row returned to the driver. The model, its data and
    its reference are built once per worker process (they are the same for every seed).

    With ``claims`` (a directory the driver reads), the cell is claimed there while it runs
    (:func:`~inference_comparisons.sweep.driver.claimed`)."""
    start = time.perf_counter()
    with claimed(claims, cell.key):
        torch.set_num_threads(1)  # before anything is built; run_on_target seeds the run itself
        _warm_up()
        model, data = _model_and_data(cell.model, cell.dataset)
        row = run_cell(cell, model, data, _reference(cell.model, cell.dataset, cell.target), out)
        row["cell_s"] = time.perf_counter() - start  # the whole cell: set-up, inference, scoring, InferenceData
    return row


def lost_row(cell: Cell, error: BaseException, attempts: int) -> dict[str, Any]:
    """The failed row of a cell whose worker died on every attempt."""
    row = empty_row(cell, get_method(cell.method).budget_unit)
    row.update(status="failed", message=f"worker lost on {attempts} attempt(s): {type(error).__name__}: {error}")
    return row
