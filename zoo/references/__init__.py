"""Stored gold-standard references, one JSON file per (model configuration, dataset).

A file is found by the model's name, its configuration and the data's fingerprint, so a
reference is never applied to data or a model it was not made for. Files are written by
``python -m inference_comparisons reference MODEL`` (see that command's help), which
records in ``provenance`` how each was made.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from zoo.base import Moments, Reference, ZooModel, data_fingerprint

__all__ = ["DIRECTORY", "from_json", "load", "path_for", "to_json"]

DIRECTORY = Path(__file__).parent


def path_for(model: ZooModel, target: str, data: torch.Tensor) -> Path:
    config = hashlib.sha256(json.dumps(model.config(), sort_keys=True).encode()).hexdigest()[:8]
    return DIRECTORY / f"{model.name}-{target}-{config}-{data_fingerprint(data)}.json"


def to_json(reference: Reference) -> dict[str, Any]:
    return {
        "log_evidence": reference.log_evidence,
        "log_evidence_se": reference.log_evidence_se,
        "exact": reference.exact,
        "moments": {k: {"mean": m.mean.tolist(), "sd": m.sd.tolist(), "se": m.se.tolist()}
                    for k, m in reference.moments.items()},
        "local_marginals": {k: v.tolist() for k, v in reference.local_marginals.items()},
        "provenance": reference.provenance,
    }


def from_json(payload: dict[str, Any]) -> Reference:
    f64 = torch.float64
    return Reference(
        log_evidence=float(payload["log_evidence"]),
        log_evidence_se=float(payload["log_evidence_se"]),
        exact=bool(payload["exact"]),
        moments={k: Moments(torch.tensor(m["mean"], dtype=f64), torch.tensor(m["sd"], dtype=f64),
                            torch.tensor(m["se"], dtype=f64)) for k, m in payload["moments"].items()},
        local_marginals={k: torch.tensor(v, dtype=f64) for k, v in payload["local_marginals"].items()},
        provenance=payload["provenance"],
    )


def load(model: ZooModel, target: str, data: torch.Tensor) -> Reference | None:
    path = path_for(model, target, data)
    if not path.exists():
        return None
    return from_json(json.loads(path.read_text()))
