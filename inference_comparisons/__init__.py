"""Measure how exact inference methods are on the zoo's models, and what it costs.

>>> import zoo, inference_comparisons as ic
>>> m = zoo.get_model("gmm")
>>> sim = m.simulate(num_datapoints=200, seed=0)
>>> res = ic.run_inference(m, sim.data, method="svi", budget=300, seed=0, target="latent")
>>> ic.score(res, m.reference(sim.data, target="latent"))["log_evidence_error"] <= 0
True

The layout (ARCHITECTURE.md): ``base`` (the method contract), ``methods/`` (registered
methods), ``estimators/`` (shared numerics), ``references/`` (gold-standard building),
``metrics`` (scores), ``schema`` (the result row), ``sweep/``, ``store``, ``report/``,
``diagnostics/`` and ``cli``.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these
    from inference_comparisons.base import (Cost, Diagnostics, InferenceMethod, InferenceResult, NotApplicable,
                                            ResultKind)
    from inference_comparisons.methods import available_methods, get_method, register_method
    from inference_comparisons.metrics import score
    from inference_comparisons.runner import run_inference
    from inference_comparisons.sweep import compare
    from inference_comparisons.calibration import calibrate

# The public API, imported on first use (PEP 562): ``python -m inference_comparisons`` can
# answer usage errors and refuse a busy output directory without first importing torch.
_EXPORTS = {
    "Cost": "base",
    "Diagnostics": "base",
    "InferenceMethod": "base",
    "InferenceResult": "base",
    "NotApplicable": "base",
    "ResultKind": "base",
    "available_methods": "methods",
    "get_method": "methods",
    "register_method": "methods",
    "score": "metrics",
    "run_inference": "runner",
    "compare": "sweep",
    "calibrate": "calibration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inference_comparisons' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"inference_comparisons.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
