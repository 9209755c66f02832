"""Loaders for the small real datasets vendored with the zoo (see README.md here)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

__all__ = ["load_csv", "standardise"]

_HERE = Path(__file__).parent


def load_csv(name: str) -> dict[str, torch.Tensor]:
    """Columns of a vendored CSV as float64 tensors, keyed by header name."""
    path = _HERE / f"{name}.csv"
    if not path.exists():
        available = sorted(p.stem for p in _HERE.glob("*.csv"))
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available)}")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: torch.tensor([float(r[key]) for r in rows], dtype=torch.float64) for key in rows[0]}


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (sample) standard deviation per column, so default priors fit."""
    return (x - x.mean(0)) / x.std(0)
