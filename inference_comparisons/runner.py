"""Running one method on one target: validation, a clean seeded single-threaded state, timing."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from zoo.base import Target, ZooModel
from zoo.validation import as_integer

from inference_comparisons.base import InferenceMethod, InferenceResult, NotApplicable
from inference_comparisons.estimators.state import prepare_cell
from inference_comparisons.methods import get_method

__all__ = ["MAX_BUDGETS", "check_budget", "check_seed", "run_inference", "run_on_target"]


#: The largest budget a method may be given, per budget unit: far beyond any sweep here,
#: and short of a typo that would run for days or exhaust memory (10^9 NUTS draws).
MAX_BUDGETS = {"draws": 10**6, "steps": 10**6, "particles": 10**8, "evaluations": 10**3}


def check_budget(budget: Any, unit: str | None = None) -> int:
    """``budget`` as an int, or ``ValueError`` unless it is a positive integer (NumPy's
    too) no larger than the maximum for its ``unit`` (:data:`MAX_BUDGETS`)."""
    number = as_integer(budget)
    if number is None or number <= 0:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    if unit in MAX_BUDGETS and number > MAX_BUDGETS[unit]:
        raise ValueError(f"budget {number} is beyond the maximum of {MAX_BUDGETS[unit]:,} {unit}")
    return number


def check_seed(seed: Any) -> int:
    """``seed`` as an int, or ``ValueError`` unless it is an integer in 0..2^32 - 1 (NumPy's
    seed range)."""
    number = as_integer(seed)
    if number is None or not 0 <= number < 2**32:
        raise ValueError(f"seed must be an integer in 0..{2**32 - 1}, got {seed!r}")
    return number


def run_on_target(method: InferenceMethod, problem: Target, budget: int, seed: int = 0) -> InferenceResult:
    """Run ``method`` on an already built target: :class:`NotApplicable` (with the reason)
    when it cannot; otherwise seeded, on one thread, with a clean parameter store, and timed."""
    budget, seed = check_budget(budget, method.budget_unit), check_seed(seed)
    reason = method.not_applicable(problem)
    if reason is not None:
        raise NotApplicable(reason)
    prepare_cell(seed)
    start = time.perf_counter()
    result = method.run(problem, budget, seed)
    wall_s = time.perf_counter() - start
    return dataclasses.replace(result, cost=dataclasses.replace(result.cost, wall_s=wall_s))


def run_inference(model: ZooModel, data: Any, method: str | InferenceMethod, budget: int, seed: int = 0,
                  target: str = "posterior") -> InferenceResult:
    """Run ``method`` (a registered name, or an instance) on ``model``'s ``target`` for
    ``data`` with ``budget`` units.

    Raises ``ValueError`` for an unknown method or target, a bad budget or bad data, and
    :class:`NotApplicable` (with the reason) when the method cannot run on the target.
    """
    inference = get_method(method) if isinstance(method, str) else method
    return run_on_target(inference, model.target(data, target), budget, seed)
