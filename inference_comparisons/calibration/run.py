"""Simulation-based calibration of one method on one target of one model.

Each simulation draws a dataset from the model (for ``posterior``: globals from their prior,
:meth:`~zoo.base.ZooModel.prior_simulation`; for ``latent``: the locals and data at the
true globals, :meth:`~zoo.base.ZooModel.simulate`), runs the method on it, and ranks the
true value of every scalar test quantity among L independent draws of the method's answer
(:mod:`.ranks`). Calibrated methods give uniform ranks; the ECDF test (:mod:`.ecdf`) says
how far from uniform they are.

Every simulation is seeded from (seed, index) alone, so it is the same whether it runs
first, last, alone or in another process. It has three independent streams: one draws the
truth and the data, one runs the method, one picks the L draws and breaks ties. The method
must not replay the numbers that drew the truth: with one seed for all (as it once was),
factor analysis' first exact draw of the latents correlated 0.24 with their truth, and a
method's starting points were functions of the truth's.

A fixed budget is not sound for every dataset: an MCMC method whose ESS falls short of the
L draws a rank needs on a hard dataset fails that simulation. With ``max_budget`` above the
budget, such a simulation is run again at a budget raised by the power of two its ESS says
it needs (ESS grows in proportion to the draws of chains that mix: L/ESS, with a quarter to
spare for the thinning's rounding, at least twice), and again if still short and its ESS
grew with the budget (chains in different modes gain little from more draws), up to
``max_budget`` (Talts et al. 2018 §5: thin by the ESS, and run longer where it is small). The ranks stay
uniform for a calibrated method: whether a simulation is run again depends on its data and
the method's draws alone, never on the true value, given which the truth is a posterior draw.

With an output directory, each finished simulation is a row of the ``sbc_ranks`` table of
``DIR/results.sqlite`` (the sweep's store and guarantees: one transaction a row, written by
the driver only), and a rerun after a kill skips the stored ones: nothing is lost or run
twice.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import zoo
from zoo.base import ZooModel
from zoo.references import key_hash
from zoo.validation import as_integer

from inference_comparisons.base import InferenceMethod, NotApplicable, ResultKind
from inference_comparisons.estimators.ecdf import combined_pvalue, uniformity_pvalues
from inference_comparisons.calibration.ranks import (SHORT_OF_DRAWS, CalibrationError, calibration_quantities,
                                                     independent_draws, ranks_of)
from inference_comparisons.lock import lock_directory
from inference_comparisons.methods import get_method
from inference_comparisons.runner import check_budget, check_seed, run_on_target
from inference_comparisons.store import (RANK_TABLE, STORE_NAME, ResultStore, decode_ranks, encode_ranks,
                                         project_version)
from inference_comparisons.sweep.driver import claimed, drive
from inference_comparisons.sweep.executors import open_executor
from inference_comparisons.sweep.progress import Progress

__all__ = ["DEFAULT_NUM_DATAPOINTS", "DEFAULT_NUM_DRAWS", "RANK_COLUMNS", "Calibration", "ESS_MARGIN",
           "SimulationSeeds", "SimulationTask", "calibrate", "lost_simulation", "run_simulation",
           "simulation_seeds"]

#: Small data by default, so that hundreds of simulations take minutes.
DEFAULT_NUM_DATAPOINTS = 30
#: Draws a rank is taken among: ranks 0..99.
DEFAULT_NUM_DRAWS = 99
#: The ESS a simulation short of draws is raised to reach, per draw a rank needs: the
#: thinning keeps whole draws per chain, so an ESS of L leaves fewer than L.
ESS_MARGIN = 1.25
#: The columns of the store's calibration rows (``ranks`` is JSON: name -> list of ranks;
#: ``run_budget``: the budget this attempt ran at, ``budget`` times a power of two; ``ess``:
#: an MCMC result's smallest ESS; both empty in stores from before raised budgets).
RANK_COLUMNS = ("model", "target", "method", "budget", "run_budget", "num_datapoints", "num_draws", "seed",
                "simulation", "status", "message", "ranks", "ess", "wall_s")


@dataclass(frozen=True)
class SimulationSeeds:
    """The seeds of one simulation's three independent streams (module docstring)."""

    simulate: int
    infer: int
    rank: int


def simulation_seeds(seed: int, index: int) -> SimulationSeeds:
    """The seeds of simulation ``index`` of a calibration run with ``seed``: independent
    streams for every pair, and within it (NumPy's SeedSequence), in torch's seed range."""
    return SimulationSeeds(*map(int, np.random.SeedSequence([seed, index]).generate_state(3)))


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
    scale: int = 1
    #: The scale and ESS of the attempt before this one (NaN for the first, or without an
    #: ESS): whether raising the budget raised the ESS.
    scale_before: int = 1
    ess_before: float = math.nan

    @property
    def run_budget(self) -> int:
        """The budget this attempt runs the method at: the calibration's times ``scale``, a
        power of two (1 for the first attempt)."""
        return self.budget * self.scale

    def raised(self, row: dict[str, Any], max_budget: int) -> "SimulationTask | None":
        """The next attempt of this simulation given its row, or ``None``: none unless it
        was short of draws; else at the budget its ESS says it needs (module docstring),
        or the largest power-of-two multiple of the budget within ``max_budget`` if that is
        less, if that is more than this attempt's. None either if this attempt's ESS grew by
        less than the square root of the factor its budget grew by: chains that do not mix
        (in different modes of the posterior) gain little from more draws; ESS 42 at 4,096
        draws and 41 at 8,192, on an HMM posterior."""
        if not (row["status"] == "failed" and SHORT_OF_DRAWS in str(row["message"])):
            return None
        ess = row.get("ess")
        known = ess is not None and math.isfinite(ess) and ess > 0
        if known and ess < self.ess_before * math.sqrt(self.scale / self.scale_before):
            return None
        wanted = ESS_MARGIN * self.num_draws / ess if known else 2.0  # no ESS (not MCMC, or an old store): twice
        factor = 2 ** max(1, math.ceil(math.log2(wanted)))
        while factor > 1 and self.run_budget * factor > max_budget:
            factor //= 2
        return (replace(self, scale=self.scale * factor, scale_before=self.scale,
                        ess_before=ess if known else math.nan) if factor > 1 else None)

    @property
    def key(self) -> str:
        """The row's key: the model's name and configuration, and everything else that
        decides the ranks, the budget it runs at and its streams' seeds among them (so a row
        from before the streams were split is not taken for one of today's)."""
        seeds = simulation_seeds(self.seed, self.index)
        return "|".join(map(str, (self.model.name, key_hash(self.model.config()), self.target, self.method.name,
                                  self.budget, self.num_datapoints, self.num_draws, self.seed, self.index,
                                  self.run_budget, f"{seeds.simulate}/{seeds.infer}/{seeds.rank}")))


def _row(task: SimulationTask) -> dict[str, Any]:
    return {"cell_id": task.key, "model": task.model.name, "target": task.target, "method": task.method.name,
            "budget": task.budget, "run_budget": task.run_budget, "num_datapoints": task.num_datapoints,
            "num_draws": task.num_draws, "seed": task.seed, "simulation": task.index, "status": "ok", "message": "",
            "ranks": "", "ess": None, "wall_s": 0.0}


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
    seeds = simulation_seeds(task.seed, task.index)
    model = task.model
    row = _row(task)
    try:
        simulation = (model.prior_simulation(task.num_datapoints, seeds.simulate) if task.target == "posterior"
                      else model.simulate(task.num_datapoints, seeds.simulate))
        problem = model.target(simulation.data, task.target)
        result = run_on_target(task.method, problem, task.run_budget, seeds.infer)
        if result.kind is ResultKind.MCMC:
            row["ess"] = result.diagnostics.ess_min
        generator = torch.Generator().manual_seed(seeds.rank)
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
    simulation, in ``simulations`` order), the simulations that failed, with their
    messages, and those whose last attempt ran above ``budget``, with the budget it ran at."""

    model: str
    target: str
    method: str
    budget: int
    num_datapoints: int
    num_draws: int
    simulations: tuple[int, ...]
    ranks: dict[str, np.ndarray]
    failures: dict[int, str] = field(default_factory=dict)
    raised: dict[int, int] = field(default_factory=dict)

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
        """The calibration of ``tasks`` (each simulation's last attempt) from their rows (by
        key); ``NotApplicable`` if the method could not run."""
        first = tasks[0]
        for row in rows.values():
            if row["status"] == "not_applicable":
                raise NotApplicable(row["message"])
        done = [t for t in tasks if rows[t.key]["status"] == "ok"]
        ranks = decode_ranks(rows[t.key]["ranks"] for t in done)
        failures = {t.index: rows[t.key]["message"] for t in tasks if rows[t.key]["status"] == "failed"}
        raised = {t.index: t.run_budget for t in tasks if t.scale > 1}
        return cls(first.model.name, first.target, first.method.name, first.budget, first.num_datapoints,
                   first.num_draws, tuple(t.index for t in done), ranks, failures, raised)


def _check(num_simulations: Any, num_datapoints: Any, num_draws: Any) -> None:
    for name, value, low in (("num_simulations", num_simulations, 1), ("num_datapoints", num_datapoints, 1),
                             ("num_draws", num_draws, 2)):
        number = as_integer(value)
        if number is None or number < low:
            raise ValueError(f"calibrate: {name} must be an integer of at least {low}, got {value!r}"
                             + (" (a rank among fewer than 2 draws tells nothing)" if name == "num_draws" else ""))


def _attempts(tasks: Sequence[SimulationTask], max_budget: int,
              run_round: Callable[[list[SimulationTask]], dict[str, dict[str, Any]]]
              ) -> tuple[list[SimulationTask], dict[str, dict[str, Any]]]:
    """Run ``tasks`` (``run_round`` gives their rows by key), then, round by round, the
    simulations short of draws again at a raised budget while it is at most ``max_budget``:
    each simulation's last attempt, in ``tasks``' order, and every row."""
    rows: dict[str, dict[str, Any]] = {}
    last = {t.index: t for t in tasks}
    todo = list(tasks)
    while todo:
        rows.update(run_round(todo))
        last.update((t.index, t) for t in todo)
        todo = [raised for t in todo if (raised := t.raised(rows[t.key], max_budget)) is not None]
    return [last[t.index] for t in tasks], rows


def calibrate(model: ZooModel | str, method: InferenceMethod | str, budget: int, *, target: str = "posterior",
              num_simulations: int = 200, num_datapoints: int = DEFAULT_NUM_DATAPOINTS,
              num_draws: int = DEFAULT_NUM_DRAWS, seed: int = 0, simulations: range | None = None,
              max_budget: int | None = None, out: Path | str | None = None, scheduler: str | None = None,
              max_workers: int | None = None, executor: Executor | None = None, progress: bool = False,
              console: Any | None = None) -> Calibration:
    """Simulation-based calibration of ``method`` at ``budget`` on ``model``'s ``target``.

    Runs simulations ``0 .. num_simulations - 1`` (or those in ``simulations``) on the
    sweep's executors (``scheduler``: ``None`` is a local process pool, ``"inprocess"``, a
    Dask LocalCluster or address; or ``executor``, used as is). With ``out``, each simulation's row goes to
    ``out/results.sqlite`` as it finishes and stored simulations are not run again. Raises
    :class:`~inference_comparisons.base.NotApplicable` if the method cannot run on the
    target or gives a point estimate (no draws to rank); a simulation that fails is
    recorded in ``failures`` with its message, and the others go on; so is one whose worker
    died twice. A simulation short of independent draws (too small an ESS) is run again at
    a raised budget (module docstring) while that is at most ``max_budget`` (default:
    ``budget``, never again); ``raised`` says which were, and at what budget they ended."""
    _check(num_simulations, num_datapoints, num_draws)
    zoo_model = zoo.get_model(model) if isinstance(model, str) else model
    zoo_model.check_target(target)
    runner = get_method(method) if isinstance(method, str) else method
    budget, seed = check_budget(budget, runner.budget_unit), check_seed(seed)
    max_budget = budget if max_budget is None else check_budget(max_budget, runner.budget_unit)
    if max_budget < budget:
        raise ValueError(f"calibrate: max_budget {max_budget} is below the budget {budget}; it is the largest "
                         f"budget a simulation short of draws is run again at (at least the budget)")
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

    def execute(round_tasks: list[SimulationTask], todo: list[SimulationTask],
                sink: Callable[[dict[str, Any]], None]) -> None:
        """Run ``todo`` (those of ``round_tasks`` not stored) on the executor (the sweep's
        driver: a simulation whose worker dies is retried, then failed), handing each row to
        ``sink`` as it comes."""
        budgets = sorted({t.run_budget for t in round_tasks})
        what = ("calibrate" if budgets == [budget] else
                f"calibrate again at budget {budgets[0]}" + (f" to {budgets[-1]}" if len(budgets) > 1 else ""))
        bar = Progress(len(todo), len(round_tasks) - len(todo), console, progress, what=what, unit="simulations")
        try:
            with open_executor(scheduler, len(todo), max_workers, executor) as workers:
                drive(workers, todo, run_simulation, lost_simulation, sink, bar)
        finally:
            bar.close()

    if out is None:
        def run_round(todo: list[SimulationTask]) -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            execute(todo, todo, lambda row: found.__setitem__(row["cell_id"], row))
            return found

        return Calibration.of_rows(*_attempts(tasks, max_budget, run_round))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    version = project_version()
    with lock_directory(out), ResultStore(out / STORE_NAME, RANK_COLUMNS, table=RANK_TABLE) as store:
        def run_round(todo: list[SimulationTask]) -> dict[str, dict[str, Any]]:
            stored = store.statuses(version)
            new = [t for t in todo if t.key not in stored]
            execute(todo, new, lambda row: store.put({**row, "version": version}))
            keys = {t.key for t in todo}
            return {r["cell_id"]: r for r in store.table().to_dict("records") if r["cell_id"] in keys}

        return Calibration.of_rows(*_attempts(tasks, max_budget, run_round))
