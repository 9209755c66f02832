"""Simulation-based calibration of one method on one target of one model.

Each simulation draws a dataset from the model (for ``posterior``: globals from their prior,
:meth:`~zoo.base.ZooModel.prior_simulation`; for ``latent``: the locals and data at the
true globals, :meth:`~zoo.base.ZooModel.simulate`), runs the method on it, and ranks the
true value of every scalar test quantity among L independent draws of the method's answer
(:mod:`.ranks`). Calibrated methods give uniform ranks; the ECDF test (:mod:`.ecdf`) says
how far from uniform they are. Every simulation is seeded from (seed, index) alone, so a
simulation is the same whether it runs first, last or alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

import zoo
from zoo.base import ZooModel
from zoo.validation import as_integer

from inference_comparisons.base import InferenceMethod, NotApplicable
from inference_comparisons.calibration.ecdf import uniformity_pvalue
from inference_comparisons.calibration.ranks import (CalibrationError, calibration_quantities, independent_draws,
                                                     ranks_of)
from inference_comparisons.methods import get_method
from inference_comparisons.runner import check_budget, run_on_target

__all__ = ["DEFAULT_NUM_DATAPOINTS", "DEFAULT_NUM_DRAWS", "Calibration", "calibrate", "simulation_seed"]

#: Small data by default, so that hundreds of simulations take minutes.
DEFAULT_NUM_DATAPOINTS = 30
#: Draws a rank is taken among: ranks 0..99.
DEFAULT_NUM_DRAWS = 99


def simulation_seed(seed: int, index: int) -> int:
    """The seed of simulation ``index`` of a calibration run with ``seed``: independent
    streams for every pair (NumPy's SeedSequence), in torch's seed range."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


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
        return {name: np.array([uniformity_pvalue(column, self.num_draws) for column in values.T])
                for name, values in self.ranks.items()}

    def pvalue(self) -> float:
        """One p-value for the whole calibration: the smallest over every scalar quantity,
        Bonferroni-adjusted by their number (valid whatever their dependence)."""
        everything = np.concatenate([p for p in self.pvalues().values()])
        return float(min(1.0, everything.min() * len(everything)))


def _check(num_simulations: int, num_datapoints: int, num_draws: int) -> None:
    for name, value, low in (("num_simulations", num_simulations, 1), ("num_datapoints", num_datapoints, 1),
                             ("num_draws", num_draws, 2)):
        number = as_integer(value)
        if number is None or number < low:
            raise ValueError(f"calibrate: {name} must be an integer of at least {low}, got {value!r}"
                             + (" (a rank among fewer than 2 draws tells nothing)" if name == "num_draws" else ""))


def calibrate(model: ZooModel | str, method: InferenceMethod | str, budget: int, *, target: str = "posterior",
              num_simulations: int = 200, num_datapoints: int = DEFAULT_NUM_DATAPOINTS,
              num_draws: int = DEFAULT_NUM_DRAWS, seed: int = 0, simulations: range | None = None) -> Calibration:
    """Simulation-based calibration of ``method`` at ``budget`` on ``model``'s ``target``.

    Runs simulations ``0 .. num_simulations - 1`` (or those in ``simulations``) in this
    process. Raises :class:`~inference_comparisons.base.NotApplicable` if the method cannot
    run on the target, or gives a point estimate (no draws to rank); a simulation whose run
    fails is recorded in ``failures`` with its message, and the others go on."""
    _check(num_simulations, num_datapoints, num_draws)
    zoo_model = zoo.get_model(model) if isinstance(model, str) else model
    zoo_model.check_target(target)
    runner = get_method(method) if isinstance(method, str) else method
    budget = check_budget(budget, runner.budget_unit)
    indices = tuple(simulations if simulations is not None else range(num_simulations))
    done, ranks, failures = [], [], {}
    for index in indices:
        seed_i = simulation_seed(seed, index)
        simulation = (zoo_model.prior_simulation(num_datapoints, seed_i) if target == "posterior"
                      else zoo_model.simulate(num_datapoints, seed_i))
        problem = zoo_model.target(simulation.data, target)
        try:
            result = run_on_target(runner, problem, budget, seed_i)  # NotApplicable ends the calibration
            if result.num_draws == 1:
                raise NotApplicable(f"{runner.name} gives a point estimate: no draws to rank")
            generator = torch.Generator().manual_seed(seed_i)
            draws = independent_draws(result, num_draws, generator)
            truth = calibration_quantities(problem, problem.truth(simulation))
            ranks.append(ranks_of(truth, calibration_quantities(problem, draws), generator))
            done.append(index)
        except NotApplicable:
            raise
        except (CalibrationError, RuntimeError, ValueError, torch.linalg.LinAlgError) as error:
            failures[index] = f"{type(error).__name__}: {error}"
    stacked = {name: np.stack([r[name].numpy() for r in ranks]) for name in (ranks[0] if ranks else {})}
    return Calibration(zoo_model.name, target, runner.name, budget, num_datapoints, num_draws, tuple(done),
                       stacked, failures)
