"""Simulation-based calibration of one method on one target of one model.

Each simulation draws a dataset from the model (for ``posterior``: globals from their prior,
:meth:`~zoo.base.ZooModel.prior_simulation`; for ``latent``: the locals and data at the
true globals, :meth:`~zoo.base.ZooModel.simulate`), runs the method on it, and ranks the
true value of every scalar test quantity among L independent draws of the method's answer
(:mod:`.ranks`). Calibrated methods give uniform ranks; the ECDF test (:mod:`.ecdf`) says
how far from uniform they are.

Every simulation is seeded from (seed, index) alone, so it is the same whether it runs
first, last, alone or in another process. With an output directory, each finished
simulation is a row of the ``sbc_ranks`` table of ``DIR/results.sqlite`` (the sweep's store
and guarantees: one transaction a row, written by the driver only), and a rerun after a
kill skips the stored ones: nothing is lost or run twice.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import zoo
from zoo.base import ZooModel
from zoo.references import key_hash
from zoo.validation import as_integer

from inference_comparisons.base import InferenceMethod, NotApplicable
from inference_comparisons.estimators.ecdf import combined_pvalue, uniformity_pvalues
from inference_comparisons.calibration.ranks import (CalibrationError, calibration_quantities, independent_draws,
                                                     ranks_of)
from inference_comparisons.lock import lock_directory
from inference_comparisons.methods import get_method
from inference_comparisons.runner import check_budget, check_seed, run_on_target
from inference_comparisons.store import (RANK_TABLE, STORE_NAME, ResultStore, decode_ranks, encode_ranks,
                                         project_version)
from inference_comparisons.sweep.driver import claimed, drive
from inference_comparisons.sweep.executors import open_executor
from inference_comparisons.sweep.progress import Progress

__all__ = ["DEFAULT_NUM_DATAPOINTS", "DEFAULT_NUM_DRAWS", "RANK_COLUMNS", "Calibration",
           "SimulationTask", "calibrate", "lost_simulation", "run_simulation", "simulation_seed"]

#: Small data by default, so that hundreds of simulations take minutes.
DEFAULT_NUM_DATAPOINTS = 30
#: Draws a rank is taken among: ranks 0..99.
DEFAULT_NUM_DRAWS = 99
#: The columns of the store's calibration rows (``ranks`` is JSON: name -> list of ranks).
RANK_COLUMNS = ("model", "target", "method", "budget", "num_datapoints", "num_draws", "seed", "simulation",
                "status", "message", "ranks", "wall_s")


def simulation_seed(seed: int, index: int) -> int:
    """The seed of simulation ``index`` of a calibration run with ``seed``: independent
    streams for every pair (NumPy's SeedSequence), in torch's seed range."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@dataclass(frozen=True)
class SimulationTask:
    """One simulation of a calibration: all a worker needs (the model and the method are
    picklable instances)."""

    model: ZooModel
    target: str
    method: InferenceMethod
    budget: int
    num_datapoints: int
    num_draws: int
    seed: int
    index: int

    @property
    def key(self) -> str:
        """The row's key: the model's name and configuration, and everything else that
        decides the ranks."""
        return "|".join(map(str, (self.model.name, key_hash(self.model.config()), self.target, self.method.name,
                                  self.budget, self.num_datapoints, self.num_draws, self.seed, self.index)))


def _row(task: SimulationTask) -> dict[str, Any]:
    return {"cell_id": task.key, "model": task.model.name, "target": task.target, "method": task.method.name,
            "budget": task.budget, "num_datapoints": task.num_datapoints, "num_draws": task.num_draws,
            "seed": task.seed, "simulation": task.index, "status": "ok", "message": "", "ranks": "", "wall_s": 0.0}


def lost_simulation(task: SimulationTask, error: BaseException, attempts: int) -> dict[str, Any]:
    """The failed row of a simulation whose worker died on every attempt."""
    return {**_row(task), "status": "failed",
            "message": f"worker lost on {attempts} attempt(s): {type(error).__name__}: {error}"}


def run_simulation(task: SimulationTask, claims: str | None = None) -> dict[str, Any]:
    """Simulate, infer and rank: the row of one simulation (status ``ok`` with its ranks,
    ``failed`` with the message, or ``not_applicable`` with the reason). ``claims``: as the
    sweep's cells (:func:`~inference_comparisons.sweep.driver.claimed`)."""
    with claimed(claims, task.key):
        return _simulate(task)


def _simulate(task: SimulationTask) -> dict[str, Any]:
    start = time.perf_counter()
    seed = simulation_seed(task.seed, task.index)
    model = task.model
    row = _row(task)
    try:
        simulation = (model.prior_simulation(task.num_datapoints, seed) if task.target == "posterior"
                      else model.simulate(task.num_datapoints, seed))
        problem = model.target(simulation.data, task.target)
        result = run_on_target(task.method, problem, task.budget, seed)
        generator = torch.Generator().manual_seed(seed)
        draws = independent_draws(result, task.num_draws, generator)
        truth = calibration_quantities(problem, problem.truth(simulation))
        ranks = ranks_of(truth, calibration_quantities(problem, draws), generator)
        row["ranks"] = encode_ranks(ranks)
    except NotApplicable as reason:
        row.update(status="not_applicable", message=str(reason))
    except (CalibrationError, RuntimeError, ValueError, torch.linalg.LinAlgError) as error:
        row.update(status="failed", message=f"{type(error).__name__}: {error}")
    row["wall_s"] = time.perf_counter() - start
    return row


@dataclass(frozen=True)
class Calibration:
    """The ranks of one (model, target, method, budget): for each test quantity an
    ``(num_simulations, n)`` integer array of ranks in 0..``num_draws`` (one row a finished
    simulation, in ``simulations`` order), and the simulations that failed, with their
    messages."""

    model: str
    target: str
    method: str
    budget: int
    num_datapoints: int
    num_draws: int
    simulations: tuple[int, ...]
    ranks: dict[str, np.ndarray]
    failures: dict[int, str] = field(default_factory=dict)

    @property
    def num_simulations(self) -> int:
        return len(self.simulations)

    def pvalues(self) -> dict[str, np.ndarray]:
        """The ECDF test's p-value of every scalar test quantity, ``(n,)`` per name."""
        return uniformity_pvalues(self.ranks, self.num_draws)

    def pvalue(self) -> float:
        """One p-value for the whole calibration: the smallest over every scalar quantity,
        Bonferroni-adjusted by their number (valid whatever their dependence)."""
        return combined_pvalue(self.pvalues())

    @classmethod
    def of_rows(cls, tasks: Sequence[SimulationTask], rows: dict[str, dict[str, Any]]) -> "Calibration":
        """The calibration of ``tasks`` from their rows (by key); ``NotApplicable`` if the
        method could not run."""
        first = tasks[0]
        for row in rows.values():
            if row["status"] == "not_applicable":
                raise NotApplicable(row["message"])
        done = [t for t in tasks if rows[t.key]["status"] == "ok"]
        ranks = decode_ranks(rows[t.key]["ranks"] for t in done)
        failures = {t.index: rows[t.key]["message"] for t in tasks if rows[t.key]["status"] == "failed"}
        return cls(first.model.name, first.target, first.method.name, first.budget, first.num_datapoints,
                   first.num_draws, tuple(t.index for t in done), ranks, failures)


def _check(num_simulations: Any, num_datapoints: Any, num_draws: Any) -> None:
    for name, value, low in (("num_simulations", num_simulations, 1), ("num_datapoints", num_datapoints, 1),
                             ("num_draws", num_draws, 2)):
        number = as_integer(value)
        if number is None or number < low:
            raise ValueError(f"calibrate: {name} must be an integer of at least {low}, got {value!r}"
                             + (" (a rank among fewer than 2 draws tells nothing)" if name == "num_draws" else ""))


def _execute(tasks: Sequence[SimulationTask], sink: Any, scheduler: str | None, max_workers: int | None,
             executor: Executor | None, progress: Progress) -> None:
    """Run ``tasks`` on an executor (the sweep's, through its driver: a simulation whose
    worker dies is retried, then failed), handing each row to ``sink`` as it comes."""
    with open_executor(scheduler, len(tasks), max_workers, executor) as workers:
        drive(workers, tasks, run_simulation, lost_simulation, sink, progress)


def calibrate(model: ZooModel | str, method: InferenceMethod | str, budget: int, *, target: str = "posterior",
              num_simulations: int = 200, num_datapoints: int = DEFAULT_NUM_DATAPOINTS,
              num_draws: int = DEFAULT_NUM_DRAWS, seed: int = 0, simulations: range | None = None,
              out: Path | str | None = None, scheduler: str | None = None, max_workers: int | None = None,
              executor: Executor | None = None, progress: bool = False, console: Any | None = None) -> Calibration:
    """Simulation-based calibration of ``method`` at ``budget`` on ``model``'s ``target``.

    Runs simulations ``0 .. num_simulations - 1`` (or those in ``simulations``) on the
    sweep's executors (``scheduler``: ``None`` is a local process pool, ``"inprocess"``, a
    Dask LocalCluster or address; or ``executor``, used as is). With ``out``, each simulation's row goes to
    ``out/results.sqlite`` as it finishes and stored simulations are not run again. Raises
    :class:`~inference_comparisons.base.NotApplicable` if the method cannot run on the
    target or gives a point estimate (no draws to rank); a simulation that fails is
    recorded in ``failures`` with its message, and the others go on; so is one whose worker
    died twice."""
    _check(num_simulations, num_datapoints, num_draws)
    zoo_model = zoo.get_model(model) if isinstance(model, str) else model
    zoo_model.check_target(target)
    runner = get_method(method) if isinstance(method, str) else method
    budget, seed = check_budget(budget, runner.budget_unit), check_seed(seed)
    indices = simulations if simulations is not None else range(num_simulations)
    if not len(indices):
        raise ValueError(f"calibrate: no simulation to run (simulations={simulations!r})")
    tasks = [SimulationTask(zoo_model, target, runner, budget, num_datapoints, num_draws, seed, i) for i in indices]
    # Whether the method applies is known from any dataset's target: stop before any work.
    reason = runner.not_applicable(zoo_model.target(zoo_model.simulate(num_datapoints, 0).data, target))
    if reason is None and runner.point_estimate:
        reason = f"{runner.name} gives a point estimate: no draws to rank"
    if reason is not None:
        raise NotApplicable(reason)
    rows: dict[str, dict[str, Any]] = {}
    options = dict(what="calibrate", unit="simulations")
    if out is None:
        bar = Progress(len(tasks), 0, console, progress, **options)
        try:
            _execute(tasks, lambda row: rows.__setitem__(row["cell_id"], row), scheduler, max_workers, executor, bar)
        finally:
            bar.close()
        return Calibration.of_rows(tasks, rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    version = project_version()
    with lock_directory(out), ResultStore(out / STORE_NAME, RANK_COLUMNS, table=RANK_TABLE) as store:
        stored = store.statuses(version)
        todo = [t for t in tasks if t.key not in stored]
        bar = Progress(len(todo), len(tasks) - len(todo), console, progress, **options)
        try:
            _execute(todo, lambda row: store.put({**row, "version": version}), scheduler, max_workers, executor, bar)
        finally:
            bar.close()
        table = store.table()
    keys = {t.key for t in tasks}
    rows = {r["cell_id"]: r for r in table.to_dict("records") if r["cell_id"] in keys}
    return Calibration.of_rows(tasks, rows)
