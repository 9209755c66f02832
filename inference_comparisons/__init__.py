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

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, NotApplicable, ResultKind
from inference_comparisons.methods import available_methods, get_method, register_method
from inference_comparisons.metrics import score
from inference_comparisons.runner import run_inference
from inference_comparisons.sweep import compare

__all__ = [
    "Cost",
    "Diagnostics",
    "InferenceMethod",
    "InferenceResult",
    "NotApplicable",
    "ResultKind",
    "available_methods",
    "compare",
    "get_method",
    "register_method",
    "run_inference",
    "score",
]
