"""Loaders for the small real datasets vendored with the zoo (see README.md here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

__all__ = ["POSTERIORDB", "load_csv", "load_posteriordb", "standardise"]

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


#: The prefix of a dataset that is a posteriordb posterior (posteriordb/README.md here).
POSTERIORDB = "posteriordb:"


def load_posteriordb(name: str) -> dict[str, torch.Tensor]:
    """The data of posteriordb's posterior ``name`` (as its Stan program reads them: every
    entry as a float64 tensor), from the verbatim copy in ``posteriordb/``."""
    path = _HERE / "posteriordb" / f"{name}.json"
    if not path.exists():
        available = sorted(p.stem for p in (_HERE / "posteriordb").glob("*.json"))
        raise ValueError(f"unknown posteriordb data {name!r}; shipped: {', '.join(available)}")
    return {key: torch.tensor(value, dtype=torch.float64) for key, value in json.loads(path.read_text()).items()}


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (sample) standard deviation per column, so default priors fit."""
    return (x - x.mean(0)) / x.std(0)
