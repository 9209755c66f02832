"""The method registry: one file per method family; registering is one line in BUILTIN."""

from __future__ import annotations

from inference_comparisons.base import InferenceMethod
from inference_comparisons.methods.annealing import AIS, SMC
from inference_comparisons.methods.amortised import IWAE, SVIAmortised, SVISemiAmortised
from inference_comparisons.methods.exact import Exact
from inference_comparisons.methods.importance import ImportanceGuide, ImportancePrior
from inference_comparisons.methods.lockstep import ChEES, Gibbs, LockstepNUTS, NeuTra
from inference_comparisons.methods.mcmc import HMC, NUTS
from inference_comparisons.methods.mode import EM, MAP, Laplace
from inference_comparisons.methods.svi import SVI, SVIFlow, SVIFullRank, SVILowRank

__all__ = ["BUILTIN", "METHODS", "available_methods", "get_method", "register_method", "unregister_method"]

#: The harness's methods, in the order the tables list them. Adding a method is one line here.
BUILTIN: tuple[InferenceMethod, ...] = (
    Exact(),
    SVI(),
    SVILowRank(),
    SVIFullRank(),
    SVIFlow(),
    Laplace(),
    MAP(),
    EM(),
    NUTS(),
    Gibbs(),
    NeuTra(),
    HMC(),
    ImportancePrior(),
    ImportanceGuide(),
    AIS(),
    SMC(),
    SVIAmortised(),
    SVISemiAmortised(),
    IWAE(),
    ChEES(),
    LockstepNUTS(),
)

METHODS: dict[str, InferenceMethod] = {}


def register_method(method: InferenceMethod) -> InferenceMethod:
    """Add a method instance to the registry under ``method.name``."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a registered method (tests that register a throwaway one clean up with this)."""
    if name not in METHODS:
        raise ValueError(f"no method {name!r} is registered; registered: {', '.join(METHODS)}")
    del METHODS[name]


def available_methods() -> list[str]:
    """Names of every registered method, in registration order."""
    return list(METHODS)


def get_method(name: str) -> InferenceMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name]


for _method in BUILTIN:
    register_method(_method)
