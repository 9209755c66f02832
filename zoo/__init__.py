"""The latent-variable model zoo: Pyro model/guide pairs with reference answers.

>>> import zoo
>>> m = zoo.get_model("gmm", num_components=3)
>>> sim = m.simulate(num_datapoints=200, seed=0)
>>> ref = m.reference(sim.data, target="latent")

The layout (ARCHITECTURE.md): ``base`` (the model contract) and ``answers`` (the values it
hands out), ``registry``, one module or package per model family (``gmm``, ``hmm``,
``factor_analysis``, ``vae/``), ``components`` and ``distributions`` (shared priors and
proposals), ``exact/`` (exact algorithms and closed forms), ``references/`` (stored gold
standards), ``datasets/``, ``validation`` and ``numerics``. The zoo never imports the
harness.
"""

from zoo.base import TARGETS, Moments, ModelInfo, Reference, Simulation, Target, ZooModel
from zoo.registry import available_models, get_model, model_class, register_model, unregister_model

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
    "model_class",
    "register_model",
    "unregister_model",
]
