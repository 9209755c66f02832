"""Running one method on one target: validation, a clean seeded single-threaded state, timing."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from zoo.base import Target, ZooModel

from inference_comparisons.base import InferenceMethod, InferenceResult, NotApplicable
from inference_comparisons.estimators.state import prepare_cell
from inference_comparisons.methods import get_method

__all__ = ["check_budget", "run_inference", "run_on_target"]


def check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    return budget


def run_on_target(method: InferenceMethod, problem: Target, budget: int, seed: int = 0) -> InferenceResult:
    """Run ``method`` on an already built target: :class:`NotApplicable` (with the reason)
    when it cannot; otherwise seeded, on one thread, with a clean parameter store, and timed."""
    budget = check_budget(budget)
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
