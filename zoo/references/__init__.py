"""Stored gold-standard references, one JSON file per (model, target, key, dataset).

A stored reference is found by what its answer depends on, never by its file name: the
model's name, the target, the model's :meth:`~zoo.base.ZooModel.reference_key` (prior
hyperparameters, and for a ``latent`` target the true parameters it conditions on) and the
data's :func:`data_fingerprint`, all recorded in the file's ``identity``. So a reference is
never applied to data or a prior it was not made for, and a field the answer does not
depend on (a true parameter value of a posterior; a hyperparameter added later with a
default that keeps the old prior) does not orphan it.

File names are for people: ``MODEL-TARGET-DATASET-DATA.json``, with DATA the first 8 hex
digits of the data fingerprint, and ``-KEY`` (8 hex digits of the key's hash) appended when
the model is not in its default configuration. Files are written by ``python -m
inference_comparisons reference MODEL``, which records in ``provenance`` how each was made.

Two sources may answer the same identity: this project's builder, and posteriordb's Stan
reference posteriors (``provenance["source"] == "posteriordb"``, file names ending
``-posteriordb``), imported by ``reference MODEL --dataset posteriordb:NAME --from-posteriordb
PATH``. A lookup takes posteriordb's where it exists (:data:`SOURCES`), and ``source=`` asks
for either; the tests check that the two agree.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import torch

from zoo.answers import Moments, Reference

__all__ = ["DIRECTORY", "FINGERPRINT_BITS", "SOURCES", "KeyedModel", "data_fingerprint", "file_name", "find",
           "from_json", "identity", "key_hash", "load", "source_of", "stored_files", "to_json"]

DIRECTORY = Path(__file__).parent

#: Who may have made a stored reference, in the order a lookup prefers them: posteriordb's
#: Stan reference posteriors (imported from outside, so they check this project's builder),
#: then this project's own builder.
SOURCES = ("posteriordb", "zoo")

#: Bits of each column's magnitude that a data fingerprint keeps (see data_fingerprint).
FINGERPRINT_BITS = 24


def data_fingerprint(data: torch.Tensor) -> str:
    """A short content hash of a dataset, used to find stored references.

    It hashes the shape and every value rounded to a grid of 2^-24 of its column's largest
    magnitude (a power of two, so integer data stay exact), not the raw float64 bytes.
    Simulated data can pass through BLAS (the VAE's decoder), whose kernels sum in a
    CPU-dependent order: the default VAE simulation hashed to 519f73a3c5828b37 raw on the
    machine that built its reference and to 4076b9798695379e on an AMD EPYC, so the stored
    reference was not found. Such differences are about float64 epsilon times the column's
    magnitude, 10^8 times finer than the grid, so they move a value across a grid boundary
    with probability ~10^-8. The grid is at most 2^-23 (1.2e-7) of the column's largest
    magnitude, so any change of a value by that much or more changes the fingerprint.
    """
    values = data.detach().to(torch.float64)
    columns = values.reshape(-1, values.shape[-1]) if values.dim() > 1 else values.reshape(-1, 1)
    _, exponent = torch.frexp(columns.abs().amax(dim=0))  # largest |value| = m 2^e, 1/2 <= m < 1
    grid = torch.ldexp(torch.ones_like(columns[0]), exponent - FINGERPRINT_BITS)
    quantised = torch.round(columns / grid).to(torch.int64).contiguous().numpy()
    digest = hashlib.sha256(str(tuple(values.shape)).encode() + quantised.tobytes())
    return digest.hexdigest()[:16]


class KeyedModel(Protocol):
    """What a stored reference knows of a model (a :class:`~zoo.base.ZooModel`): its name and
    the key of what a target's answer depends on."""

    name: str

    def reference_key(self, target: str) -> dict[str, Any]: ...


def _canonical(value: Any) -> Any:
    """A key as it reads back from JSON (tuples become lists), so stored and computed keys compare."""
    return json.loads(json.dumps(value, sort_keys=True))


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_canonical(key), sort_keys=True).encode()).hexdigest()[:8]


def identity(model: KeyedModel, target: str, data: torch.Tensor) -> dict[str, Any]:
    """What a stored reference is found by (see the module docstring)."""
    return {"model": model.name, "target": target, "key": _canonical(model.reference_key(target)),
            "data_fingerprint": data_fingerprint(data)}


def _at_defaults(model: KeyedModel) -> bool:
    """Whether every constructor field of ``model`` (a dataclass) holds its default."""
    return all(getattr(model, f.name) == f.default for f in dataclasses.fields(model))  # type: ignore[arg-type]


def file_name(model: KeyedModel, target: str, data: torch.Tensor, dataset: str, source: str = "zoo") -> str:
    """``MODEL-TARGET-DATASET-DATA[-KEY][-SOURCE].json`` (module docstring); a ``:`` in the
    dataset's name (``posteriordb:NAME``) becomes ``-``."""
    suffix = "" if _at_defaults(model) else f"-{key_hash(model.reference_key(target))}"
    suffix += "" if source == "zoo" else f"-{source}"
    return f"{model.name}-{target}-{dataset.replace(':', '-')}-{data_fingerprint(data)[:8]}{suffix}.json"


def to_json(reference: Reference, identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "identity": identity,
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


@functools.lru_cache(maxsize=64)
def _read(path: Path, modified: int) -> dict[str, Any]:
    return json.loads(path.read_text())


def stored_files(model_name: str, target: str) -> list[Path]:
    """The stored files of ``model_name``'s ``target``, whatever their configuration or data."""
    return sorted(DIRECTORY.glob(f"{model_name}-{target}-*.json"))


def source_of(payload: dict[str, Any]) -> str:
    """Who made a stored reference: ``provenance["source"]``, ``"zoo"`` (this project's
    builder) when it does not say."""
    return payload.get("provenance", {}).get("source", "zoo")


def find(model: KeyedModel, target: str, data: torch.Tensor, source: str | None = None) -> Path | None:
    """The stored file whose identity is this model's, target's and data's, if any. Two
    sources may answer one identity (module docstring): ``source`` picks one, and without it
    the first of :data:`SOURCES` that has a file wins."""
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown reference source {source!r}; accepted: {', '.join(SOURCES)}")
    wanted = identity(model, target, data)
    found: dict[str, Path] = {}
    for path in stored_files(model.name, target):
        payload = _read(path, path.stat().st_mtime_ns)
        if payload.get("identity") == wanted:
            found.setdefault(source_of(payload), path)
    return next((found[s] for s in SOURCES if s in found and source in (None, s)), None)


def load(model: KeyedModel, target: str, data: torch.Tensor, source: str | None = None) -> Reference | None:
    path = find(model, target, data, source)
    return None if path is None else from_json(_read(path, path.stat().st_mtime_ns))
