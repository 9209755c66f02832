"""Sweeps: grids of cells (model, target, method, budget, seed), run on an executor, stored.

* :func:`plan` expands the grid: each method's budget ladder for a profile (``quick``,
  ``default``, ``thorough``), optionally overridden per method (``ladders={"nuts": (100, 300)}``);
  :class:`SweepConfig` reads the same from a TOML sweep file. Everything is validated before
  any work starts.
* :func:`run_sweep` runs the cells that the store does not hold yet on a
  ``concurrent.futures.Executor`` (:func:`open_executor`: in-process for a single cell, a
  local process pool by default, Dask when given a scheduler address or ``"local"``). Each
  cell runs in a worker (:func:`execute_cell`: one torch thread, seeded, a clean param store),
  which writes the cell's InferenceData to ``DIR/idata/<cell>.nc`` (temporary name, then an
  atomic rename) and returns the row; the driver alone writes rows to the SQLite store
  (:mod:`inference_comparisons.store`) as each cell completes.
* A cell never stops the sweep: a method that cannot run on a target gives a
  ``not_applicable`` row with the reason; a cell that raises, returns no finite estimate or
  hits a divergence storm (more than half of its draws divergent), or whose worker dies on
  every attempt, gives a ``failed`` row with the message.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import tomllib
import traceback
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pandas as pd
import torch

import zoo
from zoo.base import TARGETS, Reference, ZooModel

from inference_comparisons.base import PROFILES, NotApplicable
from inference_comparisons.methods import available_methods, get_method
from inference_comparisons.metrics import METRIC_COLUMNS, score
from inference_comparisons.runner import check_budget, prepare_cell, run_inference
from inference_comparisons.store import STORE_NAME, ResultStore, project_version

__all__ = [
    "COLUMNS", "DIAGNOSTIC_COLUMNS", "DIVERGENCE_STORM_FRACTION", "Cell", "DEFAULT_NUM_DATAPOINTS",
    "SweepConfig", "check_output_directory", "compare", "execute_cell", "load_data", "open_executor",
    "parse_ladders", "plan", "run_cell", "run_sweep",
]

#: Data points of the default simulated dataset: the issue's "200 points", where prior
#: importance sampling already collapses on the mixture.
DEFAULT_NUM_DATAPOINTS = 200
#: Method seeds vary; the data are always drawn with this seed, so every cell of a model
#: sees the same data and the stored reference applies.
DATA_SEED = 0
#: ArviZ diagnostics of each cell's InferenceData kept in the table (diagnostics.py).
DIAGNOSTIC_COLUMNS: tuple[str, ...] = ("elpd_loo", "num_khat_above_0_7", "bfmi_min")
#: A cell whose MCMC draws are divergent more often than this is failed, not scored: its
#: moments describe the sampler's failure, not the posterior.
DIVERGENCE_STORM_FRACTION = 0.5
#: Attempts per cell when its worker dies (a crashed process, a lost Dask worker): the
#: first run plus one retry; then the cell is stored as failed.
MAX_ATTEMPTS = 2

COLUMNS: tuple[str, ...] = (
    "model", "dataset", "target", "method", "budget", "budget_unit", "seed", "status", "message",
    "wall_s", "density_evals", "grad_evals", *METRIC_COLUMNS, *DIAGNOSTIC_COLUMNS, "idata_path", "cell_s",
)


@dataclass(frozen=True)
class Cell:
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


def _ladder(method: str, budgets: Any) -> tuple[int, ...]:
    if isinstance(budgets, (int, str)) or not isinstance(budgets, Iterable):
        budgets = [budgets]
    budgets = list(budgets)
    if not budgets:
        raise ValueError(f"the budget ladder of {method!r} is empty")
    try:
        return tuple(check_budget(b) for b in budgets)
    except ValueError as error:
        raise ValueError(f"ladder of {method!r}: {error}") from None


def parse_ladders(specs: Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    """``["nuts=100,300", "svi=1000"]`` -> ``{"nuts": (100, 300), "svi": (1000,)}``."""
    ladders: dict[str, tuple[int, ...]] = {}
    for spec in specs or ():
        name, sep, values = spec.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--budget expects METHOD=B1,B2,..., got {spec!r}")
        try:
            budgets = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--budget {spec!r}: budgets must be positive integers") from None
        ladders[name.strip()] = _ladder(name.strip(), budgets)
    return ladders


def plan(models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
         targets: Sequence[str] | None = None, seeds: Iterable[int] = (0,), budgets: str = "default",
         dataset: str = "simulated", ladders: Mapping[str, Sequence[int]] | None = None) -> list[Cell]:
    """Every cell of a sweep, validated before any work starts.

    ``ladders`` overrides the profile's budget ladder of the methods it names."""
    if budgets not in PROFILES:
        raise ValueError(f"unknown budget profile {budgets!r}; accepted: {', '.join(PROFILES)}")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {seeds!r}")
    overrides = {name: _ladder(name, values) for name, values in (ladders or {}).items()}
    _names(list(overrides), available_methods(), "method(s) in the ladders")
    wanted_targets = _names(targets, TARGETS, "target(s)")
    wanted_methods = _names(methods, available_methods(), "method(s)")
    cells = []
    for model_name in _names(models, zoo.available_models(), "model(s)"):
        info = zoo.get_model(model_name).info
        if dataset != "simulated" and dataset not in info.datasets:
            raise ValueError(f"{model_name}: unknown dataset {dataset!r}; accepted: {', '.join(info.datasets)}")
        for target in (t for t in info.targets if t in wanted_targets):
            for method_name in wanted_methods:
                ladder = overrides.get(method_name, get_method(method_name).ladders[budgets])
                for budget in ladder:
                    cells.extend(Cell(model_name, target, method_name, budget, s, dataset) for s in seeds)
    return cells


@dataclass(frozen=True)
class SweepConfig:
    """A sweep as written in a TOML file (``run --config sweep.toml``)::

        models = ["gmm", "hmm"]          # default: every registered model
        targets = ["latent"]             # default: posterior and latent
        methods = ["exact", "is_prior"]  # default: every registered method
        seeds = 2                        # N seeds 0..N-1, or an explicit list [0, 5]
        profile = "quick"                # quick | default | thorough
        dataset = "simulated"            # or a dataset every chosen model ships

        [ladders]                        # per-method budget ladders, overriding the profile's
        is_prior = [200, 2000]
    """

    models: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    profile: str = "default"
    dataset: str = "simulated"
    ladders: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    KEYS = ("models", "targets", "methods", "seeds", "profile", "dataset", "ladders")

    @classmethod
    def from_toml(cls, path: Path | str) -> "SweepConfig":
        """Read and check a sweep file; any problem is a ``ValueError`` naming the file."""
        path = Path(path)
        try:
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
        except OSError as error:
            raise ValueError(f"cannot read sweep file {path}: {error.strerror or error}") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"sweep file {path} is not valid TOML: {error}") from None
        try:
            return cls.from_mapping(raw)
        except ValueError as error:
            raise ValueError(f"sweep file {path}: {error}") from None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "SweepConfig":
        unknown = sorted(set(raw) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; accepted: {', '.join(cls.KEYS)}")

        def names(key: str) -> tuple[str, ...] | None:
            value = raw.get(key)
            if value is None:
                return None
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of names, got {value!r}")
            return tuple(value)

        seeds = raw.get("seeds", 1)
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds < 1:
                raise ValueError(f"seeds must be at least 1, got {seeds}")
            seeds = list(range(seeds))
        if not isinstance(seeds, list) or not seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ValueError(f"seeds must be a count or a list of non-negative integers, got {seeds!r}")
        for key in ("profile", "dataset"):
            if key in raw and not isinstance(raw[key], str):
                raise ValueError(f"{key} must be a string, got {raw[key]!r}")
        ladders = raw.get("ladders", {})
        if not isinstance(ladders, dict):
            raise ValueError(f"ladders must be a table of method = [budgets], got {ladders!r}")
        config = cls(models=names("models"), targets=names("targets"), methods=names("methods"),
                     seeds=tuple(seeds), profile=raw.get("profile", "default"),
                     dataset=raw.get("dataset", "simulated"),
                     ladders={name: _ladder(name, values) for name, values in ladders.items()})
        config.plan()  # unknown names, profile, dataset: refused now, not mid-sweep
        return config

    def plan(self) -> list[Cell]:
        return plan(self.models, self.methods, self.targets, self.seeds, self.profile, self.dataset, self.ladders)


# --- one cell ----------------------------------------------------------------------------
def _divergence_storm(row: Mapping[str, Any], result: Any) -> str | None:
    divergences = row.get("divergences", math.nan)
    if not result.draws or not isinstance(divergences, (int, float)) or not math.isfinite(divergences):
        return None
    num_draws = next(iter(result.draws.values())).shape[0]
    if num_draws and divergences > DIVERGENCE_STORM_FRACTION * num_draws:
        return (f"divergence storm: {int(divergences)} of {num_draws} draws divergent "
                f"(> {DIVERGENCE_STORM_FRACTION:.0%})")
    return None


def _observation_dim(data: torch.Tensor) -> str:
    """A 1-D dataset is a sequence (DESIGN.md §4: ``(T,)`` for a sequence, ``(N, D)`` for
    i.i.d. data): its axis is time."""
    return "time" if data.ndim == 1 else "datapoint"


def _write_idata(cell: Cell, result: Any, model: ZooModel, data: torch.Tensor, out: Path) -> dict[str, Any]:
    """Build the cell's InferenceData, add its diagnostics columns, write it atomically."""
    from inference_comparisons.diagnostics import diagnostics_columns, save_inference_data, to_inference_data

    idata = to_inference_data(result, model.target(data, cell.target), data,
                              observation_dim=_observation_dim(data))
    columns = diagnostics_columns(idata)
    relative = Path("idata") / f"{cell.key}.nc"
    final = out / relative
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    save_inference_data(idata, temporary)
    os.replace(temporary, final)  # readers see the whole file or none of it
    return {**{c: columns.get(c, math.nan) for c in DIAGNOSTIC_COLUMNS}, "idata_path": str(relative)}


def _error_message(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def run_cell(cell: Cell, model: ZooModel | None = None, data: torch.Tensor | None = None,
             reference: Reference | None = None, out: Path | str | None = None) -> dict[str, Any]:
    """One result row; never raises for a failure of the method itself. With ``out``, the
    cell's InferenceData goes to ``out/idata/<cell.key>.nc`` and its diagnostics into the row."""
    model = model if model is not None else zoo.get_model(cell.model)
    data = data if data is not None else load_data(model, cell.dataset)
    method = get_method(cell.method)
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update(model=cell.model, dataset=cell.dataset, target=cell.target, method=cell.method,
               budget=cell.budget, budget_unit=method.budget_unit, seed=cell.seed, message="", idata_path="")
    try:
        reason = method.not_applicable(model.target(data, cell.target))
        if reason is not None:  # before the reference: a missing reference is not the reason
            raise NotApplicable(reason)
        reference = reference if reference is not None else model.reference(data, target=cell.target)
        result = run_inference(model, data, cell.method, check_budget(cell.budget), cell.seed, cell.target)
        row.update(score(result, reference))
        row.update(wall_s=result.cost.wall_s, density_evals=result.cost.density_evals,
                   grad_evals=result.cost.grad_evals, status="ok")
        storm = _divergence_storm(row, result)
        if not any(math.isfinite(row[k]) for k in ("log_evidence", "mean_error", "local_tv")):
            row.update(status="failed", message="the method returned no finite estimate")
        elif storm:
            row.update(status="failed", message=storm)
    except NotApplicable as reason:
        row.update(status="not_applicable", message=str(reason))
        return row
    except Exception as error:  # noqa: BLE001 - a failed cell is data, the sweep goes on
        row.update(status="failed", message=_error_message(error))
        return row
    if out is not None:
        try:
            row.update(_write_idata(cell, result, model, data, Path(out)))
        except Exception as error:  # noqa: BLE001 - the scores stand; say why there is no file
            row["message"] = "; ".join(m for m in (row["message"], f"no InferenceData: {_error_message(error)}") if m)
    return row


@lru_cache(maxsize=1)
def _warm_up() -> None:
    """Import, once per worker, what methods import lazily (ArviZ takes seconds), so that
    the first cell a fresh worker runs is not charged for it in ``wall_s``."""
    from inference_comparisons import diagnostics  # noqa: F401
    from inference_comparisons.metrics import psis_khat

    psis_khat(torch.linspace(-1.0, 0.0, 100))  # imports ArviZ, and its first PSIS fit is slow


@lru_cache(maxsize=16)
def _model_and_data(model_name: str, dataset: str) -> tuple[ZooModel, torch.Tensor]:
    model = zoo.get_model(model_name)
    return model, load_data(model, dataset)


@lru_cache(maxsize=32)
def _reference(model_name: str, dataset: str, target: str) -> Reference | None:
    model, data = _model_and_data(model_name, dataset)
    try:
        return model.reference(data, target=target)
    except LookupError:
        return None  # run_cell records the lookup error on each cell


def execute_cell(cell: Cell, out: str | None = None) -> dict[str, Any]:
    """What a worker runs: one cell, its row returned to the driver. The model, its data and
    its reference are built once per worker process (they are the same for every seed)."""
    start = time.perf_counter()
    prepare_cell(cell.seed)  # one torch thread before anything is built
    _warm_up()
    model, data = _model_and_data(cell.model, cell.dataset)
    row = run_cell(cell, model, data, _reference(cell.model, cell.dataset, cell.target), out)
    row["cell_s"] = time.perf_counter() - start  # the whole cell: set-up, inference, scoring, InferenceData
    return row


def _lost_row(cell: Cell, error: BaseException, attempts: int) -> dict[str, Any]:
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update(model=cell.model, dataset=cell.dataset, target=cell.target, method=cell.method,
               budget=cell.budget, budget_unit=get_method(cell.method).budget_unit, seed=cell.seed,
               status="failed", idata_path="",
               message=f"worker lost on {attempts} attempt(s): {type(error).__name__}: {error}")
    return row


# --- executors ---------------------------------------------------------------------------
class InProcessExecutor(Executor):
    """Runs each submitted call at once, in this process (a single cell; debugging)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


def _process_pool(max_workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child inherits torch's thread pools in whatever state the
    # driver left them, which can deadlock; spawned workers start clean.
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"))


def _dask_client(scheduler: str, max_workers: int) -> Any:
    """A Dask client: a LocalCluster for ``"local"``, else a connection to ``scheduler``."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler == "local":
        # One thread per worker: each cell pins torch to one thread and sets Pyro's global
        # seed and param store, which threads of one process would share. No dashboard: it
        # would bind a port (and warn when 8787 is taken) for nothing.
        cluster = LocalCluster(n_workers=max_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster)
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "10s"}):
            return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise ValueError(f"cannot reach a Dask scheduler at {scheduler!r}: {type(error).__name__}: {error}") from None


@contextmanager
def open_executor(scheduler: str | None, num_cells: int, max_workers: int | None = None
                  ) -> Iterator[tuple[Executor, Callable[[], Executor]]]:
    """The executor for a sweep, and a function that replaces it after a worker died.

    ``scheduler``: ``None`` (in-process for a single cell, else a local process pool of
    ``max_workers``, default one per core), ``"inprocess"``, ``"processes"``, ``"local"`` (a
    Dask LocalCluster) or a Dask scheduler address (``tcp://host:8786``). An unreachable
    address is a ``ValueError`` before any cell runs."""
    workers = max(1, min(max_workers or os.cpu_count() or 1, max(num_cells, 1)))
    if scheduler in (None, "processes"):
        if scheduler is None and num_cells <= 1:
            yield InProcessExecutor(), InProcessExecutor
            return
        pools = [_process_pool(workers)]

        def renew() -> Executor:
            pools[-1].shutdown(wait=False, cancel_futures=True)
            pools.append(_process_pool(workers))
            return pools[-1]

        try:
            yield pools[0], renew
        finally:
            pools[-1].shutdown(wait=True, cancel_futures=True)
        return
    if scheduler == "inprocess":
        yield InProcessExecutor(), InProcessExecutor
        return
    client = _dask_client(scheduler, workers)
    try:
        # pure=False: a cell is a fresh computation each time it is submitted (a retry must
        # not be answered from Dask's cache of a lost result).
        executor = client.get_executor(pure=False)
        yield executor, lambda: executor
    finally:
        cluster = client.cluster if scheduler == "local" else None
        client.close()
        if cluster is not None:
            cluster.close()


def check_output_directory(out: Path | str) -> Path:
    """Create ``out`` (and ``out/idata``) and prove it is writable, before any work."""
    out = Path(out)
    try:
        (out / "idata").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"output directory {out} is not writable: {error.strerror or error}") from None
    return out


# --- the sweep ---------------------------------------------------------------------------
class _Progress:
    """A rich progress bar in a terminal (cells done/total, failures, elapsed, ETA); in a log,
    nothing until :meth:`close` prints one final line."""

    def __init__(self, total: int, skipped: int, console: Any | None, enabled: bool):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = console if console is not None else Console()
        self.total, self.skipped, self.start = total, skipped, time.perf_counter()
        self.done = self.failures = 0
        self.bar = None
        if enabled and self.console.is_terminal and total:
            self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("failures: {task.fields[failures]}"), TextColumn("elapsed"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=self.console, transient=False)
            self.task = self.bar.add_task("sweep", total=total, failures=0)
            self.bar.start()
        self.enabled = enabled

    def advance(self, row: Mapping[str, Any]) -> None:
        self.done += 1
        self.failures += row.get("status") == "failed"
        if self.bar is not None:
            self.bar.update(self.task, advance=1, failures=self.failures)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.enabled:
            self.console.print(f"sweep: {self.done} of {self.total} cells run ({self.failures} failed), "
                               f"{self.skipped} already stored, in {time.perf_counter() - self.start:.1f} s")


def _drive(cells: Sequence[Cell], out: Path | None, sink: Callable[[dict[str, Any]], None], executor: Executor,
           renew: Callable[[], Executor], progress: _Progress) -> None:
    """Submit every cell, hand each row to ``sink`` as its cell completes; a cell whose
    worker dies is resubmitted (:data:`MAX_ATTEMPTS` in all), then stored as failed. A dead
    process breaks a whole process pool: ``renew`` replaces it once per breakage."""
    out_arg = None if out is None else str(out)
    generation = 0
    pending: dict[Future, tuple[Cell, int, int]] = {}

    def submit(cell: Cell, attempt: int) -> None:
        pending[executor.submit(execute_cell, cell, out_arg)] = (cell, attempt, generation)

    for cell in cells:
        submit(cell, 1)
    while pending:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for future in done:
            cell, attempt, born = pending.pop(future)
            try:
                row = future.result()
            except Exception as error:  # noqa: BLE001 - the worker, not the cell, failed
                if isinstance(error, BrokenExecutor) and born == generation:
                    executor, generation = renew(), generation + 1
                if attempt < MAX_ATTEMPTS:
                    submit(cell, attempt + 1)
                    continue
                row = _lost_row(cell, error, attempt)
            sink(row)
            progress.advance(row)


def _execute(cells: Sequence[Cell], out: Path | None, sink: Callable[[dict[str, Any]], None], *,
             scheduler: str | None, max_workers: int | None, executor: Executor | None, progress: bool,
             console: Any | None, skipped: int = 0) -> None:
    if not cells:
        _Progress(0, skipped, console, progress).close()
        return
    with (nullcontext((executor, lambda: executor)) if executor is not None
          else open_executor(scheduler, len(cells), max_workers)) as (opened, renew):
        bar = _Progress(len(cells), skipped, console, progress)  # the executor is up: work starts
        try:
            _drive(cells, out, sink, opened, renew, bar)
        finally:
            bar.close()


def run_sweep(cells: Sequence[Cell], out: Path | str | None, *, scheduler: str | None = None,
              max_workers: int | None = None, executor: Executor | None = None, retry_failed: bool = False,
              progress: bool = False, console: Any | None = None) -> pd.DataFrame:
    """Run ``cells``; return their rows (columns :data:`COLUMNS`, in ``cells``' order).

    With ``out``, rows go to ``out/results.sqlite`` as each cell completes and cells already
    stored for this project version are skipped (``retry_failed``: only the stored failed
    cells run again); InferenceData go to ``out/idata/``. Without ``out`` nothing is written.
    A scheduler that cannot be reached or an unwritable ``out`` is an error before any cell
    runs. ``executor``, when given, is used as is (and not shut down)."""
    options = dict(scheduler=scheduler, max_workers=max_workers, executor=executor, progress=progress,
                   console=console)
    if out is None:
        rows: list[dict[str, Any]] = []
        _execute(cells, None, rows.append, **options)
        by_key = {_row_key(r): r for r in rows}
        return pd.DataFrame([by_key[c.key] for c in cells], columns=list(COLUMNS))
    out = check_output_directory(out)
    version = project_version()
    for stale in (out / "idata").glob(".*.tmp"):  # left by a worker killed mid-write
        stale.unlink(missing_ok=True)
    with ResultStore(out / STORE_NAME, COLUMNS) as store:
        stored = store.statuses(version)
        if retry_failed:
            todo = [c for c in cells if stored.get(c.key) == "failed"]
        else:
            todo = [c for c in cells if c.key not in stored]

        def sink(row: dict[str, Any]) -> None:
            store.put({**row, "cell_id": _row_key(row), "version": version})

        _execute(todo, out, sink, skipped=len(cells) - len(todo), **options)
        table = store.table()
    table = table.set_index("cell_id").reindex([c.key for c in cells]).reset_index(drop=True)
    return table[list(COLUMNS)]


def _row_key(row: Mapping[str, Any]) -> str:
    return Cell(row["model"], row["target"], row["method"], row["budget"], row["seed"], row["dataset"]).key


def compare(models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
            targets: Sequence[str] | None = None, seeds: Iterable[int] = (0,), budgets: str = "default",
            dataset: str = "simulated", out: str | Path | None = None, *,
            ladders: Mapping[str, Sequence[int]] | None = None, scheduler: str | None = None,
            max_workers: int | None = None, executor: Executor | None = None,
            retry_failed: bool = False, progress: bool = False) -> pd.DataFrame:
    """Run a sweep and return its tidy table (one row per cell, columns :data:`COLUMNS`).

    With ``out``, the sweep is stored and resumable (``out/results.sqlite``, ``out/idata/``)
    and the report is rebuilt from the store (``results.csv``, ``report.md``, ``plots/``).
    ``scheduler``/``max_workers``/``executor``: see :func:`open_executor` (``"inprocess"``
    runs every cell in this process)."""
    from inference_comparisons.report import report_from_store

    cells = plan(models, methods, targets, seeds, budgets, dataset, ladders)
    if out is not None:
        check_output_directory(out)
    table = run_sweep(cells, out, scheduler=scheduler, max_workers=max_workers, executor=executor,
                      retry_failed=retry_failed, progress=progress)
    if out is not None:
        report_from_store(Path(out))
    return table
