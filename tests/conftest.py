"""Shared fixtures: one torch thread (as every sweep cell), small data."""

from __future__ import annotations

import pytest
import torch

import zoo
from inference_comparisons.estimators.state import prepare_cell

#: Tiny datasets: enough points for every plate to matter, few enough to be fast.
TINY_NUM_DATAPOINTS = 30


@pytest.fixture(autouse=True)
def _clean_state():
    prepare_cell(0)


def tiny_data(name: str) -> torch.Tensor:
    return zoo.get_model(name).simulate(num_datapoints=TINY_NUM_DATAPOINTS, seed=0).data
