"""Planning a sweep: the grid of cells (model, target, method, budget, seed) and the data
each model runs on, from arguments or a TOML sweep file, validated before any work starts.

Each method's budget ladder comes from a profile (``quick``, ``default``, ``thorough``) and
can be overridden per method (``ladders={"nuts": (100, 300)}``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

import zoo
from zoo.base import TARGETS, ZooModel
from zoo.validation import as_integer

from inference_comparisons.base import PROFILES
from inference_comparisons.methods import available_methods, get_method
from inference_comparisons.runner import check_budget
from inference_comparisons.schema import Cell

__all__ = ["DATA_SEED", "DEFAULT_NUM_DATAPOINTS", "SweepConfig", "load_data", "parse_ladders", "plan"]

#: Data points of the default simulated dataset: the issue's "200 points", where prior
#: importance sampling already collapses on the mixture.
DEFAULT_NUM_DATAPOINTS = 200
#: Method seeds vary; the data are always drawn with this seed, so every cell of a model
#: sees the same data and the stored reference applies.
DATA_SEED = 0


def load_data(model: ZooModel, dataset: str, num_datapoints: int = DEFAULT_NUM_DATAPOINTS) -> torch.Tensor:
    """The data a sweep runs on: a simulation from the model, or a shipped dataset."""
    if dataset == "simulated":
        return model.simulate(num_datapoints=num_datapoints, seed=DATA_SEED).data
    if dataset not in model.info.datasets:
        raise ValueError(f"{model.name}: unknown dataset {dataset!r}; accepted: {', '.join(model.info.datasets)}")
    return model.load_dataset(dataset)


def _names(given: str | Sequence[str] | None, available: Sequence[str], kind: str) -> list[str]:
    """The names ``given`` (one name may be a string), every available one for ``None``; an
    empty selection is refused (it is not a way to ask for all)."""
    if given is None:
        return list(available)
    if isinstance(given, str):
        given = [given]
    if not given:
        raise ValueError(f"an empty selection of {kind}; name at least one (or leave it out for the default)")
    unknown = [g for g in given if g not in available]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; available: {', '.join(available)}")
    return list(given)


def _ladder(method: str, budgets: Any) -> tuple[int, ...]:
    if isinstance(budgets, (int, str)) or not isinstance(budgets, Iterable):
        budgets = [budgets]
    budgets = list(budgets)
    if not budgets:
        raise ValueError(f"the budget ladder of {method!r} is empty")
    unit = get_method(method).budget_unit if method in available_methods() else None
    try:
        return tuple(check_budget(b, unit) for b in budgets)
    except ValueError as error:
        raise ValueError(f"ladder of {method!r}: {error}") from None


def _seeds(seeds: int | Iterable[int]) -> list[int]:
    """Seeds as given, or ``range(N)`` for a count N (as ``--seeds N`` and a sweep file take it)."""
    count = as_integer(seeds)
    if count is not None:
        if count < 1:
            raise ValueError(f"seeds must be a count of at least 1 or a list of seeds, got {seeds!r}")
        return list(range(count))
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ValueError(f"seeds must be a count or a list of non-negative integers, got {seeds!r}")
    listed = [as_integer(s) for s in seeds]
    if not listed or any(s is None or s < 0 for s in listed):
        raise ValueError(f"seeds must be a count or a list of non-negative integers, got {seeds!r}")
    return listed  # type: ignore[return-value]


def parse_ladders(specs: Iterable[str] | None, option: str = "--budget") -> dict[str, tuple[int, ...]]:
    """``["nuts=100,300", "svi=1000"]`` -> ``{"nuts": (100, 300), "svi": (1000,)}``; errors
    name ``option``, the command-line option the specs came from."""
    ladders: dict[str, tuple[int, ...]] = {}
    for spec in specs or ():
        name, sep, values = spec.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{option} expects METHOD=B1,B2,..., got {spec!r}")
        try:
            budgets = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"{option} {spec!r}: budgets must be positive integers") from None
        ladders[name.strip()] = _ladder(name.strip(), budgets)
    return ladders


def plan(models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
         targets: Sequence[str] | None = None, seeds: int | Iterable[int] = (0,), budgets: str = "default",
         dataset: str = "simulated", ladders: Mapping[str, Sequence[int]] | None = None) -> list[Cell]:
    """Every cell of a sweep, validated before any work starts.

    ``models``, ``methods`` and ``targets`` are names (one name may be a string); ``None``
    is every model and target, and every method in the default sweep
    (``InferenceMethod.in_default_sweep``), while an empty selection is an error. ``seeds``
    is a list of seeds or a count N (seeds 0..N-1). ``ladders`` overrides the profile's budget
    ladder of the methods it names, which must be in the sweep."""
    if budgets not in PROFILES:
        raise ValueError(f"unknown budget profile {budgets!r}; accepted: {', '.join(PROFILES)}")
    seeds = _seeds(seeds)
    wanted_targets = _names(targets, TARGETS, "target(s)")
    wanted_methods = _names(methods, available_methods(), "method(s)") if methods is not None else [
        name for name in available_methods() if get_method(name).in_default_sweep]
    overrides = {name: _ladder(name, values) for name, values in (ladders or {}).items()}
    if overrides:
        _names(list(overrides), available_methods(), "method(s) in the ladders")
    ignored = sorted(set(overrides) - set(wanted_methods))
    if ignored:
        raise ValueError(f"budget ladders given for {ignored}, which this sweep does not run "
                         f"(methods: {', '.join(wanted_methods)})")
    cells = []
    for model_name in _names(models, zoo.available_models(), "model(s)"):
        info = zoo.model_class(model_name).info
        if dataset != "simulated" and dataset not in info.datasets:
            raise ValueError(f"{model_name}: unknown dataset {dataset!r}; accepted: {', '.join(info.datasets)}")
        for target in (t for t in info.targets if t in wanted_targets):
            for method_name in wanted_methods:
                ladder = overrides.get(method_name, get_method(method_name).ladders[budgets])
                for budget in ladder:
                    cells.extend(Cell(model_name, target, method_name, budget, s, dataset) for s in seeds)
    return cells


@dataclass(frozen=True)
class SweepConfig:
    """A sweep as written in a TOML file (``run --config sweep.toml``)::

        models = ["gmm", "hmm"]          # default: every registered model
        targets = ["latent"]             # default: posterior and latent
        methods = ["exact", "is_prior"]  # default: every method in the default sweep
        seeds = 2                        # N seeds 0..N-1, or an explicit list [0, 5]
        profile = "quick"                # quick | default | thorough
        dataset = "simulated"            # or a dataset every chosen model ships

        [ladders]                        # per-method budget ladders, overriding the profile's
        is_prior = [200, 2000]
    """

    models: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    profile: str = "default"
    dataset: str = "simulated"
    ladders: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    KEYS = ("models", "targets", "methods", "seeds", "profile", "dataset", "ladders")

    @classmethod
    def from_toml(cls, path: Path | str) -> "SweepConfig":
        """Read and check a sweep file; any problem is a ``ValueError`` naming the file."""
        path = Path(path)
        try:
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
        except OSError as error:
            raise ValueError(f"cannot read sweep file {path}: {error.strerror or error}") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"sweep file {path} is not valid TOML: {error}") from None
        try:
            return cls.from_mapping(raw)
        except ValueError as error:
            raise ValueError(f"sweep file {path}: {error}") from None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "SweepConfig":
        unknown = sorted(set(raw) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; accepted: {', '.join(cls.KEYS)}")

        def names(key: str) -> tuple[str, ...] | None:
            value = raw.get(key)
            if value is None:
                return None
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of names, got {value!r}")
            return tuple(value)

        seeds = raw.get("seeds", 1)
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds < 1:
                raise ValueError(f"seeds must be at least 1, got {seeds}")
            seeds = list(range(seeds))
        if not isinstance(seeds, list) or not seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ValueError(f"seeds must be a count or a list of non-negative integers, got {seeds!r}")
        for key in ("profile", "dataset"):
            if key in raw and not isinstance(raw[key], str):
                raise ValueError(f"{key} must be a string, got {raw[key]!r}")
        ladders = raw.get("ladders", {})
        if not isinstance(ladders, dict):
            raise ValueError(f"ladders must be a table of method = [budgets], got {ladders!r}")
        config = cls(models=names("models"), targets=names("targets"), methods=names("methods"),
                     seeds=tuple(seeds), profile=raw.get("profile", "default"),
                     dataset=raw.get("dataset", "simulated"),
                     ladders={name: _ladder(name, values) for name, values in ladders.items()})
        config.plan()  # unknown names, profile, dataset: refused now, not mid-sweep
        return config

    def plan(self) -> list[Cell]:
        return plan(self.models, self.methods, self.targets, self.seeds, self.profile, self.dataset, self.ladders)
