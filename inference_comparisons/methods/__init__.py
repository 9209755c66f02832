"""The method registry: one file per method family; registering is one line here."""

from __future__ import annotations

from inference_comparisons.base import InferenceMethod
from inference_comparisons.methods.amortised import IWAE, SVIAmortised, SVISemiAmortised
from inference_comparisons.methods.exact import Exact
from inference_comparisons.methods.importance import ImportanceGuide, ImportancePrior
from inference_comparisons.methods.mcmc import HMC, NUTS
from inference_comparisons.methods.svi import SVI

__all__ = ["METHODS", "available_methods", "get_method", "register_method"]

METHODS: dict[str, InferenceMethod] = {}


def register_method(method: InferenceMethod) -> InferenceMethod:
    """Add a method instance to the registry under ``method.name``."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def available_methods() -> list[str]:
    """Names of every registered method, in registration order."""
    return list(METHODS)


def get_method(name: str) -> InferenceMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name]


for _method in (Exact(), SVI(), NUTS(), HMC(), ImportancePrior(), ImportanceGuide()):
    register_method(_method)
register_method(SVIAmortised())
register_method(SVISemiAmortised())
register_method(IWAE())
