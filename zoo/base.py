"""The model contract: what every zoo entry provides, and what an inference method sees.

A zoo model is a frozen dataclass subclassing :class:`ZooModel`. Its fields are its
hyperparameters and its *true* parameter values (the ones ``simulate`` draws from and the
``latent`` target conditions on). It poses its inference problems as :class:`Target`
objects, which are all an inference method ever sees: a method never names a model, and a
model never names a method. ARCHITECTURE.md §3 walks through the contract with an
example; ``tests/test_conformance.py`` checks every rule written here on every registered
model.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import pyro
import pyro.distributions as dist
import torch

from zoo.answers import Moments, Reference, Simulation

__all__ = [
    "TARGETS",
    "Draws",
    "LatentTarget",
    "Moments",
    "ModelInfo",
    "PosteriorTarget",
    "Reference",
    "SIMULATED",
    "Simulation",
    "Target",
    "ZooModel",
    "as_probabilities",
    "generative_process",
    "tensor_as_field",
]

#: The two inference problems a model can pose (ARCHITECTURE.md §1).
TARGETS: tuple[str, ...] = ("posterior", "latent")

#: Draws of the latent sites: site name -> ``(S, *site_shape)``, where ``site_shape`` is the
#: shape of one draw of the site (its plates' batch shape, then its event shape), i.e. what
#: ``pyro.infer.MCMC`` returns.
Draws = dict[str, torch.Tensor]


#: The dataset every model has: a simulation from its true parameters (``simulate``).
SIMULATED = {"simulated": "draws from the instance's true parameters (simulate)"}


@dataclass(frozen=True)
class ModelInfo:
    """What a user needs to know about a model before running anything on it: its
    generative process (as its docstring states it), its global and local latent sites, the
    datasets it can run on (:data:`SIMULATED` and those it ships), its literature, and the
    targets it poses.

    ``dataset_configs`` holds, for a dataset that is defined with its own hyperparameters,
    those hyperparameters: a published posterior such as posteriordb's is its data *and* its
    program's priors (:meth:`ZooModel.for_dataset`)."""

    generative_process: str
    global_sites: tuple[str, ...]
    local_sites: tuple[str, ...]
    datasets: Mapping[str, str]
    literature: tuple[str, ...]
    targets: tuple[str, ...] = TARGETS
    dataset_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def generative_process(docstring: str | None, heading: str = "Generative process") -> str:
    """The literal block (reStructuredText ``::``) that follows the line ``heading ...::`` in
    a module's (or a class's) docstring, dedented: a model writes its generative process once,
    in its docstring, and :class:`ModelInfo` shows the same text. A missing or empty block raises
    ``ValueError``."""
    lines = inspect.cleandoc(docstring or "").splitlines()  # a class docstring is indented
    starts = [i for i, line in enumerate(lines) if line.startswith(heading) and line.rstrip().endswith("::")]
    if not starts:
        raise ValueError(f"no {heading!r} literal block (a line '{heading}::') in the docstring")
    block: list[str] = []
    for line in lines[starts[0] + 1:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break  # the first unindented line ends the block
        block.append(line)
    text = "\n".join(block).strip("\n")
    indent = min(len(line) - len(line.lstrip()) for line in text.splitlines() if line.strip()) if text else 0
    text = re.sub(rf"(?m)^ {{{indent}}}", "", text)
    if not text.strip():
        raise ValueError(f"the {heading!r} literal block is empty")
    return text


class Target(abc.ABC):
    """One inference problem posed by a model on one dataset: all an inference method sees.

    A subclass sets the attributes and implements the abstract methods; the others have
    defaults. The rules, which ``tests/test_conformance.py`` checks on every registered model:

    1. **Draws.** Every method taking ``draws`` receives a :data:`Draws` dict over
       ``latent_sites`` (leading axis S: draws of MCMC chains, particles, guide samples) and
       returns tensors with the same leading S. A draw whose density cannot be computed gets
       NaN or -inf, rather than an exception that would lose every other draw of the batch.
    2. **Vectorisation.** ``model`` and ``collapsed_model`` must run under an outer particle
       plate at dim ``-(max_plate_nesting + 1)``: importance sampling, predictive simulation
       and the density checks evaluate S draws in one model execution that way. Globals then
       carry a leading particle axis, so index them from the right (``...``, ``Vindex``).
    3. **Probability vectors.** For each site in ``discrete_sites``, ``log_density``,
       ``pointwise_log_likelihood`` and ``local_marginals`` also accept a float tensor with a
       trailing axis of K probabilities in place of integer draws, and then return the
       expectation under independent categoricals (they are multilinear in one-hot states):
       mean-field SVI gets its exact ELBO from ``log_density`` that way.
    4. **One density.** ``log_density`` equals the log joint of ``collapsed_model``, and
       ``collapsed_model`` equals ``model`` with its enumerated sites summed out.
    5. **Names.** ``dims`` names the axes of one draw of each latent site, and
       ``observation_dim`` the axis that indexes the observations (``"datapoint"`` for
       i.i.d. data, ``"time"`` for a sequence): ArviZ's InferenceData uses them.

    Attributes:
        name: ``"posterior"`` (globals with priors, discrete locals summed out) or
            ``"latent"`` (globals fixed at the model's true values, locals inferred).
        latent_sites: the sites a method infers, in the order they are reported.
        discrete_sites: the subset of ``latent_sites`` with discrete support.
        max_plate_nesting: the model's plate depth (without any particle plate).
        observation_dim: see rule 5.
        has_exact: whether :meth:`exact` gives the exact reference, and
            :meth:`exact_draws` independent draws from the exact posterior.
        has_amortised_guide: whether :meth:`amortised_guide` exists (a trained encoder).
    """

    name: ClassVar[str]
    latent_sites: tuple[str, ...]
    discrete_sites: tuple[str, ...] = ()
    max_plate_nesting: int
    observation_dim: ClassVar[str] = "datapoint"
    has_exact: ClassVar[bool] = False
    has_amortised_guide: ClassVar[bool] = False

    @property
    def continuous_sites(self) -> tuple[str, ...]:
        return tuple(s for s in self.latent_sites if s not in self.discrete_sites)

    @property
    @abc.abstractmethod
    def dims(self) -> Mapping[str, tuple[str, ...]]:
        """For each latent site, the names of the axes of one draw (rule 5)."""

    @abc.abstractmethod
    def model(self) -> None:
        """The Pyro model with data (and, for ``latent``, the known globals) bound. Discrete
        sites that are *not* inferred carry ``infer={"enumerate": "parallel"}``."""

    def collapsed_model(self) -> None:
        """The same joint density with every enumerated site summed out analytically
        (``MixtureSameFamily``, ``DiscreteHMM``, ...), for the methods that cannot enumerate
        (importance sampling, HMC). By default the model itself: nothing is enumerated."""
        self.model()

    @abc.abstractmethod
    def log_density(self, draws: Draws) -> torch.Tensor:
        """``(S,)`` log p(x, latents), discrete locals that are not inferred summed out,
        written in plain torch (no Pyro tracing): the fast path of HMC/NUTS and of the gold
        standards (rules 3 and 4)."""

    @abc.abstractmethod
    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        """``(S, N)`` log p(x_n | draw), discrete locals summed out (for a sequence, the
        one-step-ahead predictive densities, which sum to the log likelihood)."""

    @abc.abstractmethod
    def quantities(self, draws: Draws) -> Draws:
        """The identifiable quantities of interest scores are computed on, each ``(S, ...)``:
        never raw parameters that label switching or rotation make meaningless."""

    def local_marginals(self, draws: Draws) -> Draws:
        """Per-draw marginals of each discrete local latent, ``(S, N, K)``: p(z | x, theta_s)
        when z is summed out; when z is itself inferred, its draw as a probability vector
        (:func:`as_probabilities`). None by default."""
        return {}

    def exact(self) -> Reference:
        """The exact reference (only where ``has_exact``)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed form")

    def exact_draws(self, num_draws: int) -> Draws:
        """``num_draws`` independent draws of the latent sites from the exact posterior (only
        where ``has_exact``), from torch's global random state: the exact method's draws, so
        that its InferenceData works with every ArviZ function."""
        raise NotImplementedError(f"{type(self).__name__} has no closed form")

    def amortised_guide(self) -> None:
        """A Pyro guide with data bound whose every latent site is inside the data plate and
        depends on its own data point only (a trained encoder q(z_n | x_n)); only where
        ``has_amortised_guide``."""
        raise NotImplementedError(f"{type(self).__name__} has no amortised guide")


class PosteriorTarget(Target):
    """The ``posterior`` target: the globals, with their priors (``zoo_model.priors()``),
    every local summed or integrated out. A subclass gives the collapsed log likelihood;
    the log density is the log prior plus it."""

    name = "posterior"

    def __init__(self, zoo_model: "ZooModel", data: torch.Tensor) -> None:
        self.zoo_model, self.data = zoo_model, data
        # Built once (log_density is NUTS's inner loop: rebuilding them cost ~6% of each
        # gradient on factor analysis) and without argument validation, as the samplers run:
        # a trajectory that reaches an invalid parameter then gets a non-finite density,
        # which NUTS counts as a divergence, not a ValueError that ends the run.
        with pyro.validation_enabled(False):
            self.priors = zoo_model.priors()
        self.latent_sites = tuple(self.priors)

    def model(self) -> None:
        self.zoo_model.model(self.data)

    def collapsed_model(self) -> None:
        self.zoo_model.collapsed_model(self.data)

    @abc.abstractmethod
    def log_likelihood(self, draws: Draws) -> torch.Tensor:
        """``(S,)`` log p(x | globals), every local summed out."""

    def log_density(self, draws: Draws) -> torch.Tensor:
        prior = sum(prior.log_prob(draws[site]) for site, prior in self.priors.items())
        return prior + self.log_likelihood(draws)

    def truth(self, simulation: Simulation) -> Draws:
        """The values of the latent sites that generated ``simulation``, as one draw (each
        site with a leading axis of 1): the globals of its ``true_params``."""
        return {site: simulation.true_params[site][None] for site in self.latent_sites}

    def data_start(self) -> Draws | None:
        """A point computed from the data alone (each global with a leading axis of 1) near
        the bulk of the posterior, where optimisers and samplers can start instead of at
        random; ``None`` where the model gives none."""
        return None

    def quantities(self, draws: Draws) -> Draws:
        """The globals themselves, by default (a model whose globals are not identifiable
        overrides this)."""
        return {site: draws[site] for site in self.latent_sites}


class LatentTarget(Target):
    """The ``latent`` target: the locals, the globals fixed at the model's true values
    (``params``)."""

    name = "latent"

    def __init__(self, zoo_model: "ZooModel", data: torch.Tensor) -> None:
        self.zoo_model, self.data = zoo_model, data
        self.params = zoo_model.true_params()

    def model(self) -> None:
        self.zoo_model.model(self.data, self.params)

    def truth(self, simulation: Simulation) -> Draws:
        """The values of the latent sites that generated ``simulation``, as one draw (each
        site with a leading axis of 1): its ``true_latents`` of the same names, by default."""
        return {site: simulation.true_latents[site][None] for site in self.latent_sites}


def as_probabilities(value: torch.Tensor, num_categories: int) -> torch.Tensor:
    """A discrete draw as a probability vector: integer draws become one-hot vectors and
    float tensors with a trailing axis of ``num_categories`` are taken to be probabilities
    already (a draw is a degenerate distribution, so expectations stay linear)."""
    if value.is_floating_point():
        return value
    return torch.nn.functional.one_hot(value, num_categories).to(torch.float64)


#: Prior draws :meth:`ZooModel.prior_simulation` tries before it gives up on a prior.
PRIOR_REDRAWS = 100


def tensor_as_field(value: torch.Tensor) -> Any:
    """A tensor as a constructor field holds it: a number, or (nested) tuples of numbers."""
    listed = value.tolist()
    return tuple(tuple(row) if isinstance(row, list) else row for row in listed) if isinstance(listed, list) else listed


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-ready Python: tensors and NumPy values by ``tolist``, tuples
    (a matrix given as rows) as lists, so that provenance and reference keys survive JSON."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value.tolist() if hasattr(value, "tolist") else value


class ZooModel(abc.ABC):
    """Base class of every zoo entry (subclasses are frozen dataclasses).

    Subclasses set ``name`` and ``info`` (and :attr:`true_parameter_fields`) and implement
    the abstract methods. The base class finds or computes their references.
    """

    name: ClassVar[str]
    info: ClassVar[ModelInfo]
    #: Constructor fields holding true parameter values: the ``posterior`` target, and so its
    #: stored reference, does not depend on them.
    true_parameter_fields: ClassVar[tuple[str, ...]] = ()
    #: Hyperparameters added after references were stored, each with the value at which the
    #: model is the one those references were built for. At that value a field is left out
    #: of :meth:`reference_key`, so the stored references stay found. A class's entries add
    #: to those of its bases and mixins.
    backward_compatible: ClassVar[Mapping[str, Any]] = {}

    # --- what each model implements -------------------------------------------------
    @abc.abstractmethod
    def validate(self, data: Any) -> torch.Tensor:
        """Return ``data`` as a tensor, or raise ``ValueError`` saying what is wrong."""

    @abc.abstractmethod
    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        """Draw a dataset from the model's true parameters."""

    @abc.abstractmethod
    def true_params(self) -> dict[str, torch.Tensor]:
        """The model's true global parameters, as float64 tensors."""

    @abc.abstractmethod
    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """The Pyro model. With ``params`` the globals are fixed at those values."""

    def collapsed_model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """The same density with every enumerated site summed out; the model itself unless
        it enumerates."""
        self.model(data, params)

    @abc.abstractmethod
    def priors(self) -> dict[str, dist.Distribution]:
        """The prior of each global site (none for a model without globals)."""

    @abc.abstractmethod
    def guide(self, data: torch.Tensor) -> None:
        """A hand-written Pyro guide over the latents of the first of ``info.targets``."""

    @abc.abstractmethod
    def target(self, data: Any, target: str) -> Target:
        """The inference problem ``target`` on ``data`` (call :meth:`check_target` first)."""

    @abc.abstractmethod
    def load_dataset(self, name: str) -> torch.Tensor:
        """A dataset listed in ``info.datasets`` (shipped with the project)."""

    # --- shared behaviour -----------------------------------------------------------
    @classmethod
    def constructor_fields(cls) -> list[str]:
        """The constructor's fields in the order it lists them: the model's own, then the
        keyword-only ones of a mixin such as :class:`~zoo.components.GaussianComponents`."""
        return [f.name for f in sorted(dataclasses.fields(cls), key=lambda f: f.kw_only)]  # type: ignore[arg-type]

    def config(self) -> dict[str, Any]:
        """The constructor fields, as plain Python values (for provenance)."""
        return {name: _plain(getattr(self, name)) for name in self.constructor_fields()}

    def for_dataset(self, name: str) -> "ZooModel":
        """This model in the configuration the dataset ``name`` is defined with
        (``info.dataset_configs``), its other fields kept; itself for any other dataset. The
        harness builds every cell's model this way, so ``--dataset posteriordb:...`` runs the
        posterior posteriordb's reference is of."""
        config = self.info.dataset_configs.get(name)
        return dataclasses.replace(self, **config) if config else self

    def check_dataset_config(self, name: str) -> None:
        """``ValueError`` if the dataset ``name`` is defined with hyperparameters this model
        does not have (a model's ``load_dataset`` calls it), naming them and the way out."""
        wanted = self.info.dataset_configs.get(name, {})
        differ = {key: value for key, value in wanted.items() if _plain(getattr(self, key)) != _plain(value)}
        if differ:
            have = ", ".join(f"{key}={_plain(getattr(self, key))!r}" for key in differ)
            need = ", ".join(f"{key}={_plain(value)!r}" for key, value in differ.items())
            raise ValueError(f"{self.name}: the dataset {name!r} is defined with {need}, and this model has {have}; "
                             f"use model.for_dataset({name!r}) (the command line does)")

    def reference_key(self, target: str) -> dict[str, Any]:
        """What ``target``'s answer depends on besides the data: a stored reference is found
        by this key and the data's fingerprint (:mod:`zoo.references`).

        ``posterior``: the constructor fields except :attr:`true_parameter_fields`.
        ``latent``: those fields and the true parameters the target conditions on, as
        values. Either way, a field at its :attr:`backward_compatible` value is left out."""
        self.check_target(target)
        key = {k: v for k, v in self.config().items() if k not in self.true_parameter_fields}
        if target == "latent":
            key["true_params"] = {k: v.tolist() for k, v in self.true_params().items()}
        neutral_values: dict[str, Any] = {}  # every class's entries: a subclass adds to its bases'
        for cls in reversed(type(self).__mro__):
            neutral_values.update(vars(cls).get("backward_compatible", {}))
        for field_name, neutral in neutral_values.items():
            if field_name in key and key[field_name] == neutral:
                del key[field_name]
        return key

    def with_params(self, params: Mapping[str, torch.Tensor]) -> "ZooModel":
        """This model with its true parameters set to ``params``, one value per global site
        in the form :meth:`priors` draws it: how :meth:`prior_simulation` simulates from a
        prior draw. By default each site is the constructor field of the same name, and a
        true-parameter field that is not a site (a known value, such as the HMM's scales given
        ``emission_scale``) keeps its value; a model whose sites are not among its
        true-parameter fields overrides this. Raises ``ValueError``
        (from the constructor's checks) for values the model refuses."""
        sites = tuple(self.priors())
        if not set(sites) <= set(self.true_parameter_fields):
            raise NotImplementedError(f"{self.name}: its true-parameter fields {self.true_parameter_fields} do not hold "
                                      f"its global sites {sites}; it must override with_params")
        return dataclasses.replace(self, **{site: tensor_as_field(params[site]) for site in sites})

    def prior_simulation(self, num_datapoints: int, seed: int) -> Simulation:
        """Globals drawn from their prior and data from them (simulation-based calibration
        of the ``posterior`` target): ``true_params`` hold the draw, ``true_latents`` the
        locals. Reproducible for a seed.

        The rule for degenerate draws: a prior draw the model refuses as true parameters (a
        scale or a weight that underflowed to 0 in float64, so that the constructor raises
        ``ValueError``), or whose data are not finite, is replaced by the next draw. Such
        draws have prior probability below float64's resolution, so the rule leaves the
        prior unchanged at that precision; anything else (a mixture component with no data
        points, a nearly flat HMM) is kept, as the prior makes it."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            priors = self.priors()
            for _ in range(PRIOR_REDRAWS):
                draw = {site: prior.sample() for site, prior in priors.items()}
                try:
                    simulation = self.with_params(draw).simulate(num_datapoints, seed)
                except ValueError:
                    continue
                if torch.isfinite(simulation.data).all():
                    return simulation
        raise RuntimeError(f"{self.name}: {PRIOR_REDRAWS} prior draws in a row were degenerate (seed {seed}); "
                           f"the priors {self.config()} put their mass where the model cannot simulate")

    def sample_globals(self, params: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The global sites inside a model's execution: sampled from :meth:`priors`, or, where
        ``params`` are given (the ``latent`` target's known values), those."""
        if params is not None:
            return {site: params[site] for site in self.info.global_sites}
        return {site: pyro.sample(site, prior) for site, prior in self.priors().items()}

    def check_target(self, target: str) -> None:
        if target not in self.info.targets:
            raise ValueError(
                f"{self.name}: unknown target {target!r}; accepted: {', '.join(self.info.targets)}"
            )

    def reference(self, data: Any, target: str = "posterior", source: str | None = None) -> Reference:
        """The reference answer for ``target`` on ``data``.

        Exact targets are computed on the spot. Gold-standard references are looked up in
        ``zoo/references`` by :meth:`reference_key` and data fingerprint; they are built by
        ``python -m inference_comparisons reference MODEL`` (the zoo never imports the
        harness, so it cannot build them itself). Where posteriordb's reference posterior and
        the project's own build both answer, ``source`` (``"posteriordb"`` or ``"zoo"``)
        picks one; by default posteriordb's (:data:`zoo.references.SOURCES`).
        """
        from zoo import references  # the stored references; they know models only by their key

        problem = self.target(data, target)
        if problem.has_exact:
            if source is not None:
                raise ValueError(f"{self.name}/{target} is exact: it has no stored source to choose (got {source!r})")
            return problem.exact()
        data = self.validate(data)
        stored = references.load(self, target, data, source)
        if stored is None:
            raise LookupError(
                f"{self.name}/{target}: no stored reference{'' if source is None else f' from {source}'} for this "
                f"model configuration and data (fingerprint {references.data_fingerprint(data)}); build one with "
                f"`python -m inference_comparisons reference {self.name}`"
            )
        return stored
