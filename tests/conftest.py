"""Shared fixtures: one torch thread (as every sweep cell), small data."""

from __future__ import annotations

import pytest
import torch

import zoo
from inference_comparisons.methods import get_method
from inference_comparisons.runner import prepare_cell

#: Budgets small enough for the conformance suite to run every method on every target.
TINY_BUDGETS = {"exact": 1, "svi": 5, "nuts": 10, "hmc": 10, "is_prior": 200, "is_guide": 200,
                "svi_amortised": 50, "svi_semi_amortised": 5, "iwae": 20}
#: Tiny datasets: enough points for every plate to matter, few enough to be fast.
TINY_NUM_DATAPOINTS = 30


@pytest.fixture(autouse=True)
def _clean_state(request, monkeypatch):
    prepare_cell(0)
    # is_guide fits its proposal with 1000 SVI steps; tiny-budget tests get a tiny fit, the
    # slow convergence tests the real one.
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setattr(get_method("is_guide"), "guide_steps", 20)


def tiny_data(name: str) -> torch.Tensor:
    return zoo.get_model(name).simulate(num_datapoints=TINY_NUM_DATAPOINTS, seed=0).data
