"""The model protocol shared by every zoo entry.

A zoo model is a frozen dataclass whose fields are its hyperparameters and its *true*
parameter values (the ones ``simulate`` draws from and the ``latent`` target conditions
on). It exposes its inference problems as :class:`Target` objects, which is all an
inference method ever sees: a method never names a model.

Sample shapes. Every helper that takes ``draws`` expects a dict mapping latent site name to
a tensor of shape ``(S, *site_shape)`` where ``site_shape`` is the shape of one draw of the
site (batch shape of its plates plus event shape), i.e. what ``pyro.infer.MCMC`` returns.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, NamedTuple

import torch

__all__ = [
    "TARGETS",
    "Moments",
    "ModelInfo",
    "Reference",
    "Simulation",
    "Target",
    "ZooModel",
    "as_probabilities",
    "data_fingerprint",
    "validate_data",
]

#: The two inference problems every model can pose (see DESIGN.md §2).
TARGETS: tuple[str, ...] = ("posterior", "latent")

Draws = dict[str, torch.Tensor]


class Moments(NamedTuple):
    """Posterior mean and standard deviation of one quantity of interest.

    ``se`` is the Monte Carlo standard error of ``mean`` (zeros when exact).
    """

    mean: torch.Tensor
    sd: torch.Tensor
    se: torch.Tensor


@dataclass(frozen=True)
class Simulation:
    """Data drawn from a model, with the values that generated it."""

    data: torch.Tensor
    true_params: dict[str, torch.Tensor]
    true_latents: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Reference:
    """The answer an inference method is scored against.

    ``log_evidence_se`` is 0 and ``exact`` is True when the answer is exact; otherwise the
    numbers are a gold standard whose making is recorded in ``provenance``.
    """

    log_evidence: float
    log_evidence_se: float
    exact: bool
    moments: dict[str, Moments]
    local_marginals: dict[str, torch.Tensor]
    provenance: dict[str, Any]


@dataclass(frozen=True)
class ModelInfo:
    """What a user needs to know about a model before running anything on it."""

    generative_process: str
    global_sites: tuple[str, ...]
    local_sites: tuple[str, ...]
    targets: tuple[str, ...]
    datasets: Mapping[str, str]
    literature: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """One inference problem posed by a model on one dataset.

    Attributes:
        name: ``"posterior"`` or ``"latent"``.
        model: a zero-argument Pyro model with data (and, for ``latent``, the known globals)
            bound. Discrete sites that are *not* inferred carry
            ``infer={"enumerate": "parallel"}`` and are summed out by enumeration.
        collapsed_model: the same joint density with every enumerated site summed out
            analytically (``MixtureSameFamily``, ``DiscreteHMM``, ...). Methods that cannot
            enumerate (importance sampling, HMC) use it. Equal to ``model`` when nothing is
            enumerated.
        latent_sites: the sites inferred by a method, in the order they are reported.
        discrete_sites: the subset of ``latent_sites`` with discrete support.
        max_plate_nesting: the model's plate depth (without any particle plate).
        quantities: draws -> identifiable quantities of interest, each ``(S, ...)``.
        local_marginals: draws -> per-draw marginals of each discrete local latent
            ``(S, N, K)``: ``p(z | x, theta_s)`` when z is summed out; when z itself is a
            latent site, its draw as a probability vector (see :func:`as_probabilities`),
            so that a method may pass a guide's probabilities instead of integer draws.
        pointwise_log_likelihood: draws -> ``(S, N)`` log p(x_n | draw), discrete locals
            summed out.
        log_density: draws -> ``(S,)`` collapsed log joint log p(x, latents) written in
            plain torch (no Pyro tracing): the fast path for HMC/NUTS and gold standards,
            which the conformance tests check against ``collapsed_model``. Given probability
            vectors for discrete sites, it returns the expectation of log p(x, z) under
            independent categoricals (multilinear in the one-hot states), which is how
            mean-field variational inference gets its exact ELBO.
        exact: the exact reference, where the mathematics gives one.
        amortised_guide: a zero-argument Pyro guide with data bound whose every latent site
            is inside the data plate and depends on its own data point only (a trained
            encoder q(z_n | x_n)), or ``None``. Methods that evaluate an amortised guide, or
            need per-datapoint importance weights (IWAE), are applicable only when it is set.
    """

    name: str
    model: Callable[[], None]
    collapsed_model: Callable[[], None]
    latent_sites: tuple[str, ...]
    discrete_sites: tuple[str, ...]
    max_plate_nesting: int
    quantities: Callable[[Draws], Draws]
    local_marginals: Callable[[Draws], Draws]
    pointwise_log_likelihood: Callable[[Draws], torch.Tensor]
    log_density: Callable[[Draws], torch.Tensor]
    exact: Callable[[], Reference] | None = None
    amortised_guide: Callable[[], None] | None = None

    @property
    def continuous_sites(self) -> tuple[str, ...]:
        return tuple(s for s in self.latent_sites if s not in self.discrete_sites)


def as_probabilities(value: torch.Tensor, num_categories: int) -> torch.Tensor:
    """A discrete draw as a probability vector: integer draws become one-hot vectors and
    float tensors with a trailing axis of ``num_categories`` are taken to be probabilities
    already (a draw is a degenerate distribution, so expectations stay linear)."""
    if value.is_floating_point():
        return value
    return torch.nn.functional.one_hot(value, num_categories).to(torch.float64)


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


def check_integer(model: str, key: str, value: Any, low: int, high: int, why: str = "") -> None:
    """Raise ``ValueError`` unless ``value`` is an integer in ``low..high`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{model}: {key} must be an integer in {low}..{high}{why}, got {value!r}")


def check_positive(model: str, key: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite positive number (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{model}: {key} must be a positive number, got {value!r}")


def validate_data(data: Any, *, name: str, ndim: tuple[int, ...], width: int | None = None,
                  integer: bool = False) -> torch.Tensor:
    """Check a user's dataset and return it as a float64 (or int64) tensor.

    Raises ``ValueError`` naming the bad value and what would be accepted.
    """
    if not isinstance(data, torch.Tensor):
        try:
            data = torch.as_tensor(data)
        except Exception as error:  # noqa: BLE001 - re-raised with context
            raise ValueError(f"{name}: data must be a tensor or array, got {type(data).__name__}") from error
    if data.ndim not in ndim:
        accepted = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name}: data must be {accepted}, got shape {tuple(data.shape)}")
    if data.shape[0] < 1:
        raise ValueError(f"{name}: data must hold at least one observation, got shape {tuple(data.shape)}")
    if width is not None and data.ndim == 2 and data.shape[1] != width:
        raise ValueError(
            f"{name}: data must have {width} column(s) to match the model, got shape {tuple(data.shape)}"
        )
    if integer:
        if data.is_floating_point() and not torch.equal(data, data.round()):
            raise ValueError(f"{name}: data must be integer-valued, got dtype {data.dtype} with fractions")
        return data.long()
    if not (data.is_floating_point() or data.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name}: data must be real-valued, got dtype {data.dtype}")
    data = data.to(torch.float64)
    if not torch.isfinite(data).all():
        bad = (~torch.isfinite(data)).nonzero()[0].tolist()
        raise ValueError(f"{name}: data must be finite, found {data[tuple(bad)].item()} at index {bad}")
    return data


class ZooModel(abc.ABC):
    """Base class of every zoo entry (subclasses are frozen dataclasses).

    Subclasses set ``name`` and ``info`` and implement the abstract methods. The base class
    turns a model into its targets and finds or computes its references.
    """

    name: ClassVar[str]
    info: ClassVar[ModelInfo]

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

    @abc.abstractmethod
    def guide(self, data: torch.Tensor) -> None:
        """A hand-written Pyro guide over the globals of the ``posterior`` target."""

    @abc.abstractmethod
    def target(self, data: Any, target: str) -> Target:
        """The inference problem ``target`` on ``data``."""

    @abc.abstractmethod
    def load_dataset(self, name: str) -> torch.Tensor:
        """A dataset listed in ``info.datasets`` (shipped with the project)."""

    # --- shared behaviour -----------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor fields, as plain Python values (for provenance and keys)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.tolist() if isinstance(value, torch.Tensor) else value
        return out

    def check_target(self, target: str) -> None:
        if target not in self.info.targets:
            raise ValueError(
                f"{self.name}: unknown target {target!r}; accepted: {', '.join(self.info.targets)}"
            )

    def reference(self, data: Any, target: str = "posterior") -> Reference:
        """The reference answer for ``target`` on ``data``.

        Exact targets are computed on the spot. Gold-standard references are looked up in
        ``zoo/references`` by model configuration and data fingerprint; they are built by
        ``python -m inference_comparisons reference MODEL`` (the zoo never imports the
        harness, so it cannot build them itself).
        """
        from zoo import references  # local import: references imports this module

        problem = self.target(data, target)
        if problem.exact is not None:
            return problem.exact()
        stored = references.load(self, target, self.validate(data))
        if stored is None:
            raise LookupError(
                f"{self.name}/{target}: no stored reference for this model configuration and data "
                f"(fingerprint {data_fingerprint(self.validate(data))}); build one with "
                f"`python -m inference_comparisons reference {self.name}`"
            )
        return stored
