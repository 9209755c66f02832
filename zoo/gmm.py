"""Bayesian Gaussian mixture with K components in D dimensions.

Generative process::

    weights ~ Dirichlet(concentration * 1_K)
    locs    ~ K i.i.d. Normal(mean_prior_loc, mean_prior_scale^2 I_D) vectors, relabelled so
              that their first coordinates increase (their order statistics)
    scales  ~ LogNormal(scale_prior_loc, scale_prior_scale), shape (K, D)
    for n in 1..N:
        z_n ~ Categorical(weights)                                  # summed out
        x_n ~ Normal(locs[z_n], diag(scales[z_n])^2)

Ordering the means removes label switching by construction (DESIGN.md §6), and because the
unordered prior is exchangeable, the ordered model has *the same* marginal likelihood as
the textbook one. ``posterior`` infers (weights, locs, scales) with z summed out;
``latent`` fixes the globals at the instance's values and infers z, whose exact posterior
is the responsibilities.

References: Bishop (2006) *Pattern Recognition and Machine Learning* §9.2; Richardson &
Green (1997) JRSS B 59:731; Jasra, Holmes & Stephens (2005) Stat. Sci. 20:50 (label
switching); Pyro's GMM tutorial (enumeration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import Transform
from pyro.ops.indexing import Vindex
from torch.distributions import biject_to, transform_to

from zoo import register_model
from zoo.base import (ModelInfo, Reference, Simulation, Target, ZooModel, as_probabilities, check_integer,
                      check_positive, validate_data)
from zoo.datasets import load_csv, standardise

__all__ = ["GaussianMixture", "OrderedMeans"]


# --- the ordered prior on component means -------------------------------------------
class _OrderedFirstColumn(constraints.Constraint):
    """(K, D) matrices whose first column is strictly increasing."""

    event_dim = 2

    def check(self, value: torch.Tensor) -> torch.Tensor:
        first = value[..., 0]
        return (first[..., 1:] > first[..., :-1]).all(-1)


ordered_first_column = _OrderedFirstColumn()


class _OrderedFirstColumnTransform(Transform):
    """R^{K x D} -> ordered_first_column: column 0 by cumulative exp-increments."""

    domain = constraints.independent(constraints.real, 2)
    codomain = ordered_first_column
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _OrderedFirstColumnTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        first = torch.cat([x[..., :1, 0], x[..., 1:, 0].exp()], dim=-1).cumsum(-1)
        return torch.cat([first.unsqueeze(-1), x[..., 1:]], dim=-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        first = y[..., 0]
        unconstrained = torch.cat([first[..., :1], (first[..., 1:] - first[..., :-1]).log()], dim=-1)
        return torch.cat([unconstrained.unsqueeze(-1), y[..., 1:]], dim=-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x[..., 1:, 0].sum(-1)


biject_to.register(_OrderedFirstColumn)(lambda constraint: _OrderedFirstColumnTransform())
transform_to.register(_OrderedFirstColumn)(lambda constraint: _OrderedFirstColumnTransform())


class OrderedMeans(dist.TorchDistribution):
    """Order statistics (by first coordinate) of K i.i.d. Normal(loc, scale^2 I_D) vectors.

    Density ``K! prod_k Normal(mu_k)`` on the region where the first coordinates increase.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = ordered_first_column

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_components: int, dim: int,
                 validate_args: bool | None = None) -> None:
        self.loc, self.scale = loc, scale
        self.num_components, self.dim = num_components, dim
        super().__init__(torch.Size(), torch.Size([num_components, dim]), validate_args=validate_args)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            x = self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype)
            order = x[..., 0].argsort(-1)
            return x.gather(-2, order.unsqueeze(-1).expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        normal = dist.Normal(self.loc, self.scale).log_prob(value).sum((-1, -2))
        return normal + math.lgamma(self.num_components + 1)


# --- the model -----------------------------------------------------------------------
_PROCESS = __doc__.split("Generative process::")[1].split("Ordering")[0].strip("\n")
_DEFAULT_3 = {"weights": (0.3, 0.4, 0.3), "locs": (-3.0, 0.0, 4.0), "scales": (0.5, 1.0, 0.7)}


@register_model
@dataclass(frozen=True)
class GaussianMixture(ZooModel):
    """Bayesian Gaussian mixture (see the module docstring for the generative process).

    True parameters default to the documented 1-D, K=3 mixture (weights 0.3/0.4/0.3, means
    -3/0/4, standard deviations 0.5/1.0/0.7). For other K or D they default to equal
    weights, first-coordinate means spaced 3.5 apart and centred on 0, and scales 0.7.
    ``locs`` and ``scales`` may be given as K numbers (D = 1) or K rows of D numbers.
    """

    num_components: int = 3
    dim: int = 1
    weights: tuple[float, ...] | None = None
    locs: tuple[Any, ...] | None = None
    scales: tuple[Any, ...] | None = None
    concentration: float = 1.0
    mean_prior_loc: float = 0.0
    mean_prior_scale: float = 5.0
    scale_prior_loc: float = 0.0
    scale_prior_scale: float = 1.0

    name = "gmm"
    info = ModelInfo(
        generative_process=_PROCESS,
        global_sites=("weights", "locs", "scales"),
        local_sites=("assignment",),
        targets=("posterior", "latent"),
        datasets={
            "simulated": "draws from the instance's true parameters (simulate)",
            "old_faithful": "272 eruption durations of the Old Faithful geyser (1-D, standardised); "
                            "use dim=2 for (duration, waiting time)",
        },
        literature=(
            "Bishop (2006) Pattern Recognition and Machine Learning, section 9.2",
            "Richardson & Green (1997) JRSS B 59:731-792",
            "Jasra, Holmes & Stephens (2005) Statistical Science 20:50-67",
        ),
    )

    def __post_init__(self) -> None:
        check_integer("gmm", "num_components", self.num_components, 1, 20)
        check_integer("gmm", "dim", self.dim, 1, 10)
        for key in ("concentration", "mean_prior_scale", "scale_prior_scale"):
            check_positive("gmm", key, getattr(self, key))
        self.true_params()  # validates user-given parameters

    # --- parameters ------------------------------------------------------------------
    def true_params(self) -> dict[str, torch.Tensor]:
        K, D = self.num_components, self.dim
        f64 = torch.float64
        default = _DEFAULT_3 if (K, D) == (3, 1) else None
        weights = torch.tensor(self.weights if self.weights is not None else
                               (default["weights"] if default else [1.0 / K] * K), dtype=f64)
        if self.locs is not None:
            locs = torch.tensor(self.locs, dtype=f64).reshape(K, -1) if len(self.locs) == K else None
        elif default:
            locs = torch.tensor(default["locs"], dtype=f64).reshape(K, 1)
        else:
            locs = torch.zeros(K, D, dtype=f64)
            locs[:, 0] = 3.5 * (torch.arange(K, dtype=f64) - (K - 1) / 2)
        if self.scales is not None:
            scales = torch.tensor(self.scales, dtype=f64).reshape(K, -1) if len(self.scales) == K else None
        else:
            scales = torch.tensor(default["scales"], dtype=f64).reshape(K, 1) if default else torch.full((K, D), 0.7, dtype=f64)
        if weights.shape != (K,) or (weights <= 0).any() or abs(weights.sum().item() - 1) > 1e-6:
            raise ValueError(f"gmm: weights must be {K} positive numbers summing to 1, got {self.weights}")
        if locs is None or locs.shape != (K, D) or not bool(ordered_first_column.check(locs)):
            raise ValueError(f"gmm: locs must be {K} rows of {D} number(s) with increasing first "
                             f"coordinates (the model orders its components), got {self.locs}")
        if scales is None or scales.shape != (K, D) or (scales <= 0).any():
            raise ValueError(f"gmm: scales must be {K} rows of {D} positive number(s), got {self.scales}")
        return {"weights": weights, "locs": locs, "scales": scales}

    def validate(self, data: Any) -> torch.Tensor:
        data = validate_data(data, name="gmm", ndim=(1, 2) if self.dim == 1 else (2,), width=self.dim)
        return data.reshape(-1, self.dim)

    def load_dataset(self, name: str) -> torch.Tensor:
        if name != "old_faithful":
            raise ValueError(f"gmm: unknown dataset {name!r}; accepted: old_faithful")
        columns = load_csv("old_faithful")
        x = torch.stack([columns["eruptions_min"], columns["waiting_min"]], dim=-1)[:, : self.dim]
        if self.dim > 2:
            raise ValueError(f"gmm: old_faithful has 2 columns, the model has dim={self.dim}")
        return standardise(x)

    # --- generative model ------------------------------------------------------------
    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        if not isinstance(num_datapoints, int) or num_datapoints < 1:
            raise ValueError(f"gmm: num_datapoints must be a positive integer, got {num_datapoints!r}")
        params = self.true_params()
        generator = torch.Generator().manual_seed(seed)
        z = torch.multinomial(params["weights"], num_datapoints, replacement=True, generator=generator)
        noise = torch.randn(num_datapoints, self.dim, generator=generator, dtype=torch.float64)
        data = params["locs"][z] + params["scales"][z] * noise
        return Simulation(data=data, true_params=params, true_latents={"assignment": z})

    def _priors(self) -> dict[str, dist.Distribution]:
        K, D = self.num_components, self.dim
        f64 = dict(dtype=torch.float64)
        return {
            "weights": dist.Dirichlet(torch.full((K,), float(self.concentration), **f64)),
            "locs": OrderedMeans(torch.tensor(self.mean_prior_loc, **f64),
                                 torch.tensor(self.mean_prior_scale, **f64), K, D),
            "scales": dist.LogNormal(torch.tensor(self.scale_prior_loc, **f64),
                                     torch.tensor(self.scale_prior_scale, **f64)).expand([K, D]).to_event(2),
        }

    def _globals(self, params: Mapping[str, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
        if params is not None:
            return params["weights"], params["locs"], params["scales"]
        priors = self._priors()
        return tuple(pyro.sample(site, priors[site]) for site in ("weights", "locs", "scales"))

    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Textbook form: z_n sampled, marked for parallel enumeration."""
        weights, locs, scales = self._globals(params)
        # Shapes under an outer particle plate at dim -2: weights (S,1,K), locs (S,1,K,D).
        with pyro.plate("data", data.shape[0], dim=-1):
            z = pyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Normal(Vindex(locs)[..., z, :], Vindex(scales)[..., z, :]).to_event(1),
                        obs=data)

    def collapsed_model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Same density with z summed out analytically by ``MixtureSameFamily``."""
        weights, locs, scales = self._globals(params)
        with pyro.plate("data", data.shape[0], dim=-1):
            pyro.sample("obs", self._mixture(weights, locs, scales), obs=data)

    @staticmethod
    def _mixture(weights: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor) -> dist.Distribution:
        return dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(locs, scales).to_event(1))

    def guide(self, data: torch.Tensor) -> None:
        """Mean-field guide over the globals in their natural parameterisations."""
        K, D = self.num_components, self.dim
        f64 = dict(dtype=torch.float64)
        concentration = pyro.param("weights_concentration", torch.full((K,), 10.0, **f64),
                                   constraint=constraints.positive)
        pyro.sample("weights", dist.Dirichlet(concentration))
        # Start the means at evenly spaced quantiles of the data, the rest at the data mean.
        x = self.validate(data)
        start = x.mean(0).expand(K, D).clone()
        start[:, 0] = x[:, 0].quantile(torch.linspace(0.5 / K, 1 - 0.5 / K, K, **f64))
        locs_loc = pyro.param("locs_loc", _OrderedFirstColumnTransform().inv(start))
        locs_scale = pyro.param("locs_scale", torch.full((K, D), 0.1, **f64), constraint=constraints.positive)
        pyro.sample("locs", dist.TransformedDistribution(dist.Normal(locs_loc, locs_scale).to_event(2),
                                                         [_OrderedFirstColumnTransform()]))
        scales_loc = pyro.param("scales_loc", torch.zeros(K, D, **f64))
        scales_scale = pyro.param("scales_scale", torch.full((K, D), 0.1, **f64), constraint=constraints.positive)
        pyro.sample("scales", dist.LogNormal(scales_loc, scales_scale).to_event(2))

    # --- quantities, marginals, likelihoods -------------------------------------------
    def _component_log_lik(self, data: torch.Tensor, weights: torch.Tensor, locs: torch.Tensor,
                           scales: torch.Tensor) -> torch.Tensor:
        """(S, N, K): log weights_k + log N(x_n | locs_k, scales_k) for each draw."""
        x = data[None, :, None, :]  # (1, N, 1, D)
        normal = dist.Normal(locs[:, None], scales[:, None]).log_prob(x).sum(-1)
        return weights.log()[:, None, :] + normal

    def target(self, data: Any, target: str) -> Target:
        self.check_target(target)
        data = self.validate(data)
        if target == "posterior":
            # Built once (log_density is NUTS's inner loop) and without argument validation,
            # like the densities built inside the other models' log_density under the
            # samplers' validation_enabled(False): a trajectory that reaches an invalid
            # scale then gets a non-finite density, which NUTS counts as a divergence.
            with pyro.validation_enabled(False):
                priors = self._priors()

            def params_of(draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
                return draws["weights"], draws["locs"], draws["scales"]

            def local_marginals(draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                return {"assignment": self._component_log_lik(data, *params_of(draws)).softmax(-1)}

            return Target(
                name="posterior",
                model=lambda: self.model(data),
                collapsed_model=lambda: self.collapsed_model(data),
                latent_sites=("weights", "locs", "scales"),
                discrete_sites=(),
                max_plate_nesting=1,
                quantities=lambda draws: {k: draws[k] for k in ("weights", "locs", "scales")},
                local_marginals=local_marginals,
                pointwise_log_likelihood=lambda draws: self._component_log_lik(data, *params_of(draws)).logsumexp(-1),
                log_density=lambda draws: sum(prior.log_prob(draws[site]) for site, prior in priors.items())
                + self._component_log_lik(data, *params_of(draws)).logsumexp(-1).sum(-1),
            )

        params = self.true_params()
        component = self._component_log_lik(data, *(params[k][None] for k in ("weights", "locs", "scales")))[0]
        # log p(x_n | z_n = k, theta): the likelihood once the assignment is given.
        emission = component - params["weights"].log()
        K = self.num_components

        def exact() -> Reference:
            responsibilities = component.softmax(-1)
            return Reference(
                log_evidence=float(component.logsumexp(-1).sum()),
                log_evidence_se=0.0,
                exact=True,
                moments={},
                local_marginals={"assignment": responsibilities},
                provenance={"method": "exact: log p(x|theta) = sum_n logsumexp_k; responsibilities by Bayes' rule",
                            "model": self.name, "config": self.config()},
            )

        return Target(
            name="latent",
            model=lambda: self.model(data, params),
            collapsed_model=lambda: self.model(data, params),
            latent_sites=("assignment",),
            discrete_sites=("assignment",),
            max_plate_nesting=1,
            quantities=lambda draws: {},
            local_marginals=lambda draws: {"assignment": as_probabilities(draws["assignment"], K)},
            pointwise_log_likelihood=lambda draws: (emission * as_probabilities(draws["assignment"], K)).sum(-1),
            log_density=lambda draws: (component * as_probabilities(draws["assignment"], K)).sum((-1, -2)),
            exact=exact,
        )
