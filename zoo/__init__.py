"""The latent-variable model zoo: Pyro model/guide pairs with reference answers.

>>> import zoo
>>> m = zoo.get_model("gmm", num_components=3)
>>> sim = m.simulate(num_datapoints=200, seed=0)
>>> ref = m.reference(sim.data, target="latent")
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from zoo.base import TARGETS, Moments, ModelInfo, Reference, Simulation, Target, ZooModel

__all__ = [
    "TARGETS",
    "Moments",
    "ModelInfo",
    "Reference",
    "Simulation",
    "Target",
    "ZooModel",
    "available_models",
    "get_model",
    "register_model",
]

_REGISTRY: dict[str, type[ZooModel]] = {}
M = TypeVar("M", bound=type[ZooModel])


def register_model(cls: M) -> M:
    """Class decorator: add a model to the zoo under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name` to be registered")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def available_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def get_model(name: str, **hyperparameters: Any) -> ZooModel:
    """Instantiate a registered model; unknown names or hyperparameters raise ``ValueError``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    cls = _REGISTRY[name]
    accepted = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown hyperparameter(s) {unknown}; accepted: {', '.join(accepted)}")
    return cls(**hyperparameters)


# Registration happens on import: one line per model family.
from zoo import gmm  # noqa: E402,F401
from zoo import factor_analysis  # noqa: E402,F401
from zoo import hmm  # noqa: E402,F401
from zoo import vae  # noqa: E402,F401
