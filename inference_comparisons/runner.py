"""Running one cell: validation, a clean seeded single-threaded state, timing, scoring."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pyro
import torch

from zoo.base import ZooModel

from inference_comparisons.base import InferenceResult, NotApplicable
from inference_comparisons.methods import get_method

__all__ = ["check_budget", "prepare_cell", "run_inference"]


def prepare_cell(seed: int) -> None:
    """No hidden state between runs: one thread, a fresh seed, an empty param store."""
    torch.set_num_threads(1)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()


def check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    return budget


def run_inference(model: ZooModel, data: Any, method: str, budget: int, seed: int = 0,
                  target: str = "posterior") -> InferenceResult:
    """Run ``method`` on ``model``'s ``target`` for ``data`` with ``budget`` units.

    Raises ``ValueError`` for an unknown method or target, a bad budget or bad data, and
    :class:`NotApplicable` (with the reason) when the method cannot run on the target.
    """
    inference = get_method(method)
    budget = check_budget(budget)
    problem = model.target(data, target)
    reason = inference.not_applicable(problem)
    if reason is not None:
        raise NotApplicable(reason)
    prepare_cell(seed)
    start = time.perf_counter()
    result = inference.run(problem, budget, seed)
    wall_s = time.perf_counter() - start
    return dataclasses.replace(result, cost=dataclasses.replace(result.cost, wall_s=wall_s))
