"""Distributions shared by the zoo's models and by the proposals built on them.

- :class:`OrderedNormal`: the order statistics of K i.i.d. normal means, as K numbers
  (the HMM's state means) or as K rows of D numbers ordered by their first coordinate (the
  mixture's component means). Ordering the means removes label switching by construction
  (Jasra, Holmes & Stephens 2005), and because the unordered prior is exchangeable, a model
  with ordered means has the same marginal likelihood as the textbook one.
- :class:`DefensiveMixture`: a mixture with fixed weights of distributions over one shape,
  the defensive importance-sampling proposal of Hesterberg (1995); with
  :data:`DEFENSIVE_WEIGHTS` it is the proposal of the VAE's log p(x) estimates and of its
  stored reference.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import Transform
from torch.distributions import biject_to, transform_to

__all__ = ["DEFENSIVE_WEIGHTS", "DefensiveMixture", "LinearGaussianChain", "OrderedNormal", "ordered_first_column"]

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


class OrderedNormal(dist.TorchDistribution):
    """Order statistics of K i.i.d. Normal(loc, scale^2 I_D) vectors: density
    ``K! prod_k Normal(mu_k)`` on the ordered region.

    With ``dim=None`` the draws are K increasing numbers (event shape ``(K,)``); with
    ``dim=D`` they are K rows of D numbers whose first coordinates increase (event shape
    ``(K, D)``). ``loc`` and ``scale`` are scalars shared by every coordinate.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_components: int, dim: int | None = None,
                 validate_args: bool | None = None) -> None:
        self.loc, self.scale = loc, scale
        self.num_components, self.dim = num_components, dim
        event = (num_components,) if dim is None else (num_components, dim)
        super().__init__(torch.Size(), torch.Size(event), validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.ordered_vector if self.dim is None else ordered_first_column

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            x = self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype)
            if self.dim is None:
                return x.sort(-1).values
            order = x[..., 0].argsort(-1)
            return x.gather(-2, order.unsqueeze(-1).expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event_dims = tuple(range(-len(self.event_shape), 0))
        normal = dist.Normal(self.loc, self.scale).log_prob(value).sum(event_dims)
        return normal + math.lgamma(self.num_components + 1)


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
