"""The clean state every run starts from: methods, cells and reference builds alike."""

from __future__ import annotations

import pyro
import torch

__all__ = ["prepare_cell"]


def prepare_cell(seed: int) -> None:
    """No hidden state between runs: one torch thread (two-core machines run one cell per
    core, and torch's default threads slow small models tenfold there), a fresh seed for
    Pyro, torch, NumPy and Python, and an empty Pyro parameter store."""
    torch.set_num_threads(1)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
