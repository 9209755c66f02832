"""Distributions shared by the zoo's models and by the proposals built on them.

- :class:`OrderedNormal`: K normal means conditioned on being ordered, as K numbers (the
  HMM's state means) or as K rows of D numbers ordered by their first coordinate (the
  mixture's component means). Ordering the means removes label switching by construction
  (Jasra, Holmes & Stephens 2005). With one prior mean for all, the law is the order
  statistics of K i.i.d. normals, and because that unordered prior is exchangeable, a model
  with ordered means has the same marginal likelihood as the textbook one. With a prior mean
  per component (and optionally positive means, Stan's ``positive_ordered``), it is the
  normalised truncation, as a Stan program with ``ordered`` parameters writes it.
- :class:`ShortMixture`: torch's ``MixtureSameFamily`` with a faster density for a few
  components (the mixture's collapsed likelihood, evaluated on 10^4 particles at once by
  importance sampling).
- :class:`DefensiveMixture`: a mixture with fixed weights of distributions over one shape,
  the defensive importance-sampling proposal of Hesterberg (1995); with
  :data:`DEFENSIVE_WEIGHTS` it is the proposal of the VAE's log p(x) estimates and of its
  stored reference.
"""

from __future__ import annotations

import functools
import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import Transform
from torch.distributions import biject_to, transform_to

from zoo.numerics import logsumexp_short

__all__ = ["DEFENSIVE_WEIGHTS", "DefensiveMixture", "LinearGaussianChain", "OrderedNormal", "ShortMixture",
           "log_ordered_mass", "ordered_first_column"]

#: Weights of the defensive proposal built on an amortised guide q(z | x): q itself, a
#: Student-t(2) at q's location with twice its scale, and the prior. The prior component
#: bounds every importance weight by p(x | z) / 0.1; the t component covers a q that is too
#: narrow; the q component keeps most particles where q puts them.
DEFENSIVE_WEIGHTS: tuple[float, float, float] = (0.45, 0.45, 0.1)


# --- (K, D) matrices ordered by their first column --------------------------------------
class _OrderedFirstColumn(constraints.Constraint):
    """(K, D) matrices whose first column is strictly increasing."""

    event_dim = 2

    def check(self, value: torch.Tensor) -> torch.Tensor:
        first = value[..., 0]
        return (first[..., 1:] > first[..., :-1]).all(-1)


ordered_first_column = _OrderedFirstColumn()


class OrderedFirstColumnTransform(Transform):
    """R^{K x D} -> ordered_first_column: column 0 by cumulative exp-increments (the
    (K, D) analogue of Pyro's ``OrderedTransform``), the other columns unchanged."""

    domain = constraints.independent(constraints.real, 2)
    codomain = ordered_first_column
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderedFirstColumnTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        first = torch.cat([x[..., :1, 0], x[..., 1:, 0].exp()], dim=-1).cumsum(-1)
        return torch.cat([first.unsqueeze(-1), x[..., 1:]], dim=-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        first = y[..., 0]
        unconstrained = torch.cat([first[..., :1], (first[..., 1:] - first[..., :-1]).log()], dim=-1)
        return torch.cat([unconstrained.unsqueeze(-1), y[..., 1:]], dim=-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x[..., 1:, 0].sum(-1)


biject_to.register(_OrderedFirstColumn)(lambda constraint: OrderedFirstColumnTransform())
transform_to.register(_OrderedFirstColumn)(lambda constraint: OrderedFirstColumnTransform())


#: Points of the grid on which :func:`log_ordered_mass` integrates (a power of two plus one).
ORDERED_MASS_GRID = 2 ** 17 + 1
#: Rejection rounds :meth:`OrderedNormal.sample` tries before it gives up.
ORDERED_SAMPLE_ROUNDS = 100


def log_ordered_mass(locs: torch.Tensor, scale: float, positive: bool = False) -> float:
    """See :func:`_log_ordered_mass`; cached, as a model builds its priors at every execution."""
    return _log_ordered_mass(tuple(float(v) for v in locs), float(scale), bool(positive))


@functools.lru_cache(maxsize=64)
def _log_ordered_mass(locs_tuple: tuple[float, ...], scale: float, positive: bool) -> float:
    """log P(X_1 < ... < X_K), with 0 < X_1 too if ``positive``, for independent X_k ~
    Normal(locs_k, scale^2): the log normaliser of :class:`OrderedNormal`.

    Equal locations without the bound give -log K! exactly (the order statistics). Otherwise
    the recursion F_1(x) = P(lower < X_1 <= x), F_k(x) = int_{-inf}^x phi_k(t) F_{k-1}(t) dt
    runs on a grid of :data:`ORDERED_MASS_GRID` points from the bound (or 12 scales below the
    lowest location) to 12 scales above the highest, by the trapezoidal rule: its error is
    O(h^2) of smooth integrands, about 1e-8 relative for locations a few scales apart."""
    locs = torch.tensor(locs_tuple, dtype=torch.float64)
    K = locs.shape[0]
    if not positive and bool((locs == locs[0]).all()):
        return -math.lgamma(K + 1)
    low = 0.0 if positive else float(locs.min()) - 12 * scale
    grid = torch.linspace(low, float(locs.max()) + 12 * scale, ORDERED_MASS_GRID, dtype=torch.float64)
    normals = [dist.Normal(loc, scale) for loc in locs.to(torch.float64)]
    mass = normals[0].cdf(grid) - normals[0].cdf(torch.tensor(low, dtype=torch.float64))
    step = grid[1] - grid[0]
    for normal in normals[1:]:
        integrand = normal.log_prob(grid).exp() * mass
        mass = torch.cat([integrand.new_zeros(1), ((integrand[1:] + integrand[:-1]) * step / 2).cumsum(0)])
    return math.log(float(mass[-1]))


class OrderedNormal(dist.TorchDistribution):
    """K normal means conditioned on being ordered: density ``prod_k Normal(mu_k | loc_k,
    scale^2 I_D) / P(ordered)`` on the ordered region.

    With ``dim=None`` the draws are K increasing numbers (event shape ``(K,)``); with
    ``dim=D`` they are K rows of D numbers whose first coordinates increase (event shape
    ``(K, D)``). ``loc`` is a scalar shared by every mean, which makes the law the order
    statistics of K i.i.d. normals (density ``K! prod_k Normal(mu_k)``, exchangeable), or K
    numbers, one per component (for every coordinate of its row). ``positive`` bounds the K
    numbers below by 0 too: Stan's ``positive_ordered`` (``dim=None`` only). P(ordered) is
    :func:`log_ordered_mass`.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_components: int, dim: int | None = None,
                 positive: bool = False, validate_args: bool | None = None) -> None:
        if loc.dim() not in (0, 1) or (loc.dim() == 1 and loc.shape[0] != num_components):
            raise ValueError(f"OrderedNormal: loc must be one number or {num_components}, got shape {tuple(loc.shape)}")
        if positive and dim is not None:
            raise ValueError("OrderedNormal: positive means are K numbers (dim=None), not K rows")
        self.loc, self.scale = loc, scale
        self.num_components, self.dim, self.positive = num_components, dim, positive
        self.exchangeable = loc.dim() == 0 and not positive
        self.log_mass = log_ordered_mass(loc.expand(num_components), float(scale), positive)
        event = (num_components,) if dim is None else (num_components, dim)
        super().__init__(torch.Size(), torch.Size(event), validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        if self.dim is not None:
            return ordered_first_column
        return constraints.positive_ordered_vector if self.positive else constraints.ordered_vector

    def _row_locs(self) -> torch.Tensor:
        """The locations as they broadcast against one draw."""
        return self.loc if self.loc.dim() == 0 or self.dim is None else self.loc.unsqueeze(-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            if self.exchangeable:  # sorting i.i.d. draws gives the order statistics exactly
                x = self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype)
                if self.dim is None:
                    return x.sort(-1).values
                order = x[..., 0].argsort(-1)
                return x.gather(-2, order.unsqueeze(-1).expand(shape))
            return self._rejection_sample(shape)

    def _rejection_sample(self, shape: torch.Size) -> torch.Tensor:
        """Independent normals, kept when they are in the support: exact, with acceptance
        rate exp(log_mass)."""
        wanted = math.prod(shape[:len(shape) - len(self.event_shape)])
        batch = math.ceil(1.2 * wanted / math.exp(self.log_mass)) + 16
        kept: list[torch.Tensor] = []
        for _ in range(ORDERED_SAMPLE_ROUNDS):
            x = self._row_locs() + self.scale * torch.randn((batch, *self.event_shape), dtype=self.loc.dtype)
            kept.append(x[self.support.check(x)])
            if sum(len(k) for k in kept) >= wanted:
                return torch.cat(kept)[:wanted].reshape(shape)
        raise RuntimeError(f"OrderedNormal: the ordered region has prior mass {math.exp(self.log_mass):.3g}, too "
                           f"little to sample by rejection in {ORDERED_SAMPLE_ROUNDS} rounds")

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event_dims = tuple(range(-len(self.event_shape), 0))
        normal = dist.Normal(self._row_locs(), self.scale).log_prob(value).sum(event_dims)
        return normal - self.log_mass


# --- linear-Gaussian Markov chains ----------------------------------------------------------
class LinearGaussianChain(dist.TorchDistribution):
    """The law of a whole state path z_1..z_T (event shape ``(T, D)``) of a linear-Gaussian
    Markov chain: z_1 ~ Normal(initial_loc, diag(initial_scale^2)), z_t ~ Normal(A z_{t-1},
    diag(state_scale^2)). One sample site for the path, where a ``pyro.markov`` loop has T:
    its log density is one vectorised expression (the state-space model's ``latent`` target).
    ``state_scale`` may carry a batch shape; the rest are one set."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, initial_loc: torch.Tensor, initial_scale: torch.Tensor, transition: torch.Tensor,
                 state_scale: torch.Tensor, num_steps: int, validate_args: bool | None = None) -> None:
        self.initial_loc, self.initial_scale, self.transition = initial_loc, initial_scale, transition
        self.state_scale, self.num_steps = state_scale, num_steps
        super().__init__(state_scale.shape[:-1], torch.Size((num_steps, transition.shape[-1])),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):  # noqa: D102 - as torch's
        scale = self.state_scale.expand(torch.Size(batch_shape) + self.state_scale.shape[-1:])
        return LinearGaussianChain(self.initial_loc, self.initial_scale, self.transition, scale, self.num_steps,
                                   validate_args=False)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.transition.dtype)
        path = [self.initial_loc + self.initial_scale * noise[..., 0, :]]
        for t in range(1, self.num_steps):
            path.append(path[-1] @ self.transition.T + self.state_scale * noise[..., t, :])
        return torch.stack(path, -2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        first = dist.Normal(self.initial_loc, self.initial_scale).log_prob(value[..., 0, :]).sum(-1)
        moves = dist.Normal(value[..., :-1, :] @ self.transition.T, self.state_scale.unsqueeze(-2),
                            validate_args=False).log_prob(value[..., 1:, :])
        return first + moves.sum((-1, -2))


# --- finite mixtures -----------------------------------------------------------------------
class ShortMixture(dist.MixtureSameFamily):
    """``MixtureSameFamily`` whose ``log_prob`` sums a short component axis quickly.

    torch's version renormalises the mixing logits with ``log_softmax`` after they have
    been broadcast to every (particle, data point) pair, and reduces the components as the
    innermost axis; for 3 components on 10^4 particles x 200 points both passes cost as
    much as the component densities. The logits of a ``Categorical`` are normalised when
    it is built, so they are used as they are, and the components are summed by
    :func:`~zoo.numerics.logsumexp_short`. Same value to rounding.
    """

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(x)
        component = self.component_distribution.log_prob(self._pad(x))  # (..., K)
        return logsumexp_short(component + self.mixture_distribution.logits, -1)


# --- defensive importance sampling ---------------------------------------------------------
class DefensiveMixture(dist.TorchDistribution):
    """A mixture of distributions over the same (batch, event) shape, with fixed weights."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, components: list[dist.Distribution], weights: tuple[float, ...] = DEFENSIVE_WEIGHTS) -> None:
        if len(components) != len(weights):
            raise ValueError(f"DefensiveMixture: {len(components)} components but {len(weights)} weights")
        self.components = components
        self.log_mix = torch.tensor(weights, dtype=torch.float64).log()
        first = components[0]
        super().__init__(first.batch_shape, first.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):  # noqa: D102 - as torch's
        batch_shape = torch.Size(batch_shape)
        return DefensiveMixture([c.expand(batch_shape) for c in self.components], tuple(self.log_mix.exp().tolist()))

    def sample(self, sample_shape=torch.Size()):
        draws = torch.stack([c.sample(sample_shape) for c in self.components])  # (C, *shape, *event)
        choice = dist.Categorical(logits=self.log_mix).sample(torch.Size(sample_shape) + self.batch_shape)
        index = choice.reshape((1,) + choice.shape + (1,) * len(self.event_shape)).expand((1,) + draws.shape[1:])
        return draws.gather(0, index)[0]

    def log_prob(self, value):
        parts = torch.stack([c.log_prob(value) for c in self.components], dim=-1)
        return (parts + self.log_mix).logsumexp(-1)
