"""Running a sweep: the cells the store does not hold yet go to an executor, and the driver
alone writes each row to the store as its cell completes.

Each cell runs in a worker (:func:`~inference_comparisons.sweep.cell.execute_cell`), which
writes the cell's InferenceData to ``DIR/idata/<cell>.nc`` (temporary name, then an atomic
rename) and returns the row; the driver writes rows to the SQLite store
(:mod:`inference_comparisons.store`). A cell whose worker dies is resubmitted, then stored
as failed.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import sqlite3
import sys
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from zoo.validation import as_integer

from inference_comparisons.lock import lock_directory
from inference_comparisons.report import report_from_store
from inference_comparisons.schema import COLUMNS, Cell
from inference_comparisons.store import STORE_NAME, ResultStore, idata_intact, project_version
from inference_comparisons.sweep.cell import DiskFull, execute_cell, lost_row
from inference_comparisons.sweep.driver import drive
from inference_comparisons.sweep.executors import NO_WORKERS_TIMEOUT_S, NoWorkers, open_executor
from inference_comparisons.sweep.plan import plan
from inference_comparisons.sweep.progress import Progress

__all__ = ["Interrupted", "check_output_directory", "compare", "run_sweep"]

class Interrupted(KeyboardInterrupt):
    """A sweep stopped by an interrupt (SIGINT; SIGTERM in the CLI): every finished cell is
    stored, and the message says how many and how to resume."""


def check_output_directory(out: Path | str) -> Path:
    """Create ``out`` (and ``out/idata``) and prove it is writable, before any work. An
    empty name is refused (it would write into the current directory)."""
    if not str(out).strip():
        raise ValueError("the output directory must be named, got an empty name")
    out = Path(out)
    try:
        (out / "idata").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"output directory {out} is not writable: {error.strerror or error}") from None
    return out


def _remove_stale_temporary_files(directory: Path) -> None:
    """Delete the InferenceData files left half-written by a worker killed mid-write:
    ``.<cell>.nc.<pid>.tmp`` whose process is gone (a file a live process is still writing
    is left alone)."""
    for stale in directory.glob(".*.tmp"):
        pid = stale.suffixes[-2].lstrip(".") if len(stale.suffixes) >= 2 else ""
        if not (pid.isdigit() and _alive(int(pid))):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _execute(cells: Sequence[Cell], out: Path | None, sink: Callable[[dict[str, Any]], None], *,
             scheduler: str | None, max_workers: int | None, executor: Executor | None, progress: bool,
             console: Any | None, worker_timeout_s: float, skipped: int = 0) -> None:
    if not cells:
        Progress(0, skipped, console, progress).close()
        return
    with open_executor(scheduler, len(cells), max_workers, executor) as workers:
        bar = Progress(len(cells), skipped, console, progress)  # the executor is up: work starts
        try:
            drive(workers, cells, functools.partial(execute_cell, out=None if out is None else str(out)), lost_row,
                  sink, bar, worker_timeout_s)
        finally:
            bar.close()


def run_sweep(cells: Sequence[Cell], out: Path | str | None, *, scheduler: str | None = None,
              max_workers: int | None = None, executor: Executor | None = None, retry_failed: bool = False,
              progress: bool = False, console: Any | None = None,
              worker_timeout_s: float = NO_WORKERS_TIMEOUT_S) -> pd.DataFrame:
    """Run ``cells``; return their rows (columns :data:`COLUMNS`, in ``cells``' order).

    With ``out``, rows go to ``out/results.sqlite`` as each cell completes and cells already
    stored for this project version are skipped (``retry_failed``: only the stored failed
    cells run again); InferenceData go to ``out/idata/``. Without ``out`` nothing is written.
    A scheduler that cannot be reached or an unwritable ``out`` is an error before any cell
    runs. ``executor``, when given, is used as is (and not shut down). On a Dask cluster that
    has had no worker for ``worker_timeout_s`` seconds the sweep stops with :class:`NoWorkers`,
    every finished cell stored."""
    if max_workers is not None and (as_integer(max_workers) is None or max_workers < 1):
        raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
    if isinstance(worker_timeout_s, bool) or not isinstance(worker_timeout_s, numbers.Real) or not (
            math.isfinite(worker_timeout_s) and worker_timeout_s > 0):
        raise ValueError(f"the worker timeout must be a positive number of seconds, got {worker_timeout_s!r}")
    options = dict(scheduler=scheduler, max_workers=max_workers, executor=executor, progress=progress,
                   console=console, worker_timeout_s=worker_timeout_s)
    if out is None:
        rows: list[dict[str, Any]] = []
        _execute(cells, None, rows.append, **options)
        by_key = {Cell.of_row(r).key: r for r in rows}
        return pd.DataFrame([by_key[c.key] for c in cells], columns=list(COLUMNS))
    out = check_output_directory(out)
    version = project_version()
    with lock_directory(out), ResultStore(out / STORE_NAME, COLUMNS) as store:
        _remove_stale_temporary_files(out / "idata")
        stored = store.statuses(version)
        # An ok cell whose InferenceData is missing or unreadable (a write that failed, a file
        # lost or damaged since) is not finished: it runs again, on a resume or a retry.
        unfinished = {key for key, path in store.idata_paths(version).items()
                      if stored[key] == "ok" and not idata_intact(out, path)}
        if retry_failed:
            todo = [c for c in cells if stored.get(c.key) == "failed" or c.key in unfinished]
        else:
            todo = [c for c in cells if c.key not in stored or c.key in unfinished]

        def sink(row: dict[str, Any]) -> None:
            try:
                store.put({**row, "cell_id": Cell.of_row(row).key, "version": version})
            except sqlite3.OperationalError as error:
                if "full" in str(error):  # SQLite's "database or disk is full"; the transaction rolled back
                    raise DiskFull(str(out)) from None
                raise

        def stored_so_far() -> str:
            return f"{len(set(store.statuses(version)) & {c.key for c in cells})} of {len(cells)} cells stored"

        try:
            _execute(todo, out, sink, skipped=len(cells) - len(todo), **options)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: {stored_so_far()}; rerun the same command to resume") from None
        except NoWorkers as error:
            raise NoWorkers(f"{error}: {stored_so_far()}; start workers (or wait longer: --worker-timeout) and "
                            f"rerun the same command to resume") from None
        table = store.table()
    table = table.set_index("cell_id").reindex([c.key for c in cells]).reset_index(drop=True)
    return table[list(COLUMNS)]


def compare(models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
            targets: Sequence[str] | None = None, seeds: int | Iterable[int] = (0,), budgets: str = "default",
            dataset: str = "simulated", out: str | Path | None = None, *,
            ladders: Mapping[str, Sequence[int]] | None = None, scheduler: str | None = None,
            max_workers: int | None = None, executor: Executor | None = None,
            retry_failed: bool = False, progress: bool = False,
            worker_timeout_s: float = NO_WORKERS_TIMEOUT_S) -> pd.DataFrame:
    """Run a sweep and return its tidy table (one row per cell, columns :data:`COLUMNS`).

    With ``out``, the sweep is stored and resumable (``out/results.sqlite``, ``out/idata/``)
    and the report is rebuilt from the store (``results.csv``, ``report.md``, ``plots/``).
    ``scheduler``/``max_workers``/``executor``: see :func:`open_executor` (``"inprocess"``
    runs every cell in this process); ``worker_timeout_s``: see :func:`run_sweep`."""
    if getattr(sys.modules.get("__main__"), "__name__", "") == "__mp_main__":
        # A spawned worker is importing the user's script as its main module: without an
        # ``if __name__ == "__main__":`` guard, the script's compare() would run in every worker.
        raise RuntimeError("compare() was called while a worker process imported your script: put the "
                           "script's top-level code under `if __name__ == \"__main__\":`")
    cells = plan(models, methods, targets, seeds, budgets, dataset, ladders)
    if out is not None:
        check_output_directory(out)
    table = run_sweep(cells, out, scheduler=scheduler, max_workers=max_workers, executor=executor,
                      retry_failed=retry_failed, progress=progress, worker_timeout_s=worker_timeout_s)
    if out is not None:
        report_from_store(Path(out))
    return table
