"""The model registry: which models the zoo holds, by name.

The zoo's own models are listed in :data:`BUILTIN` as ``"module:Class"`` paths, one line
each, and imported the first time a lookup needs them: registration has no import-time
side effects and no cycle with ``zoo/__init__.py``. A model defined outside the zoo (a
user's own, or a throwaway one in a test) is added with :func:`register_model`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, TypeVar

from zoo.base import ZooModel

__all__ = ["BUILTIN", "available_models", "get_model", "model_class", "register_model", "unregister_model"]

#: The zoo's models: name -> "module:Class". Adding a model is one line here.
BUILTIN: dict[str, str] = {
    "gmm": "zoo.gmm:GaussianMixture",
    "hmm": "zoo.hmm:HiddenMarkovModel",
    "factor_analysis": "zoo.factor_analysis:FactorAnalysis",
    "ppca": "zoo.factor_analysis:ProbabilisticPCA",
    "state_space": "zoo.state_space:StateSpaceModel",
    "vae": "zoo.vae.model:VAE",
}

_REGISTERED: dict[str, type[ZooModel]] = {}
M = TypeVar("M", bound=type[ZooModel])


def register_model(cls: M) -> M:
    """Add a model class (a frozen dataclass subclassing :class:`~zoo.base.ZooModel`) under
    ``cls.name``; usable as a class decorator. A name already taken raises ``ValueError``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name` to be registered")
    if not (isinstance(cls, type) and issubclass(cls, ZooModel) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{cls!r} must be a dataclass subclassing zoo.base.ZooModel to be registered")
    taken = _REGISTERED.get(name) or (name in BUILTIN and model_class(name))
    if taken and taken is not cls:
        raise ValueError(f"a model named {name!r} is already registered ({taken.__name__})")
    _REGISTERED[name] = cls
    return cls


def unregister_model(name: str) -> None:
    """Remove a model added by :func:`register_model` (the built-in ones stay)."""
    if name not in _REGISTERED:
        raise ValueError(f"no model {name!r} was added with register_model; added: {', '.join(_REGISTERED) or 'none'}")
    del _REGISTERED[name]


def available_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(set(BUILTIN) | set(_REGISTERED))


def model_class(name: str) -> type[ZooModel]:
    """The class registered as ``name``; an unknown name raises ``ValueError`` listing the zoo."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    module, _, attribute = BUILTIN[name].partition(":")
    cls = getattr(importlib.import_module(module), attribute)
    if getattr(cls, "name", None) != name:  # the table and the class must agree
        raise ValueError(f"zoo.registry.BUILTIN lists {BUILTIN[name]} as {name!r}, but its name is {cls.name!r}")
    return cls


def get_model(name: str, **hyperparameters: Any) -> ZooModel:
    """Instantiate a registered model; unknown names or hyperparameters raise ``ValueError``."""
    cls = model_class(name)
    accepted = cls.constructor_fields()
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown hyperparameter(s) {unknown}; accepted: {', '.join(accepted)}")
    return cls(**hyperparameters)
