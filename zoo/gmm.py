"""Bayesian Gaussian mixture with K components in D dimensions.

Generative process::

    weights ~ Dirichlet(concentration * 1_K)
    locs    ~ K i.i.d. Normal(mean_prior_loc, mean_prior_scale^2 I_D) vectors, relabelled so
              that their first coordinates increase (their order statistics); with K prior
              means mean_prior_loc: K normals conditioned on increasing first coordinates
    scales  ~ LogNormal(scale_prior_loc, scale_prior_scale), shape (K, D)   (scale_prior = "lognormal")
              or HalfNormal(scale_prior_scale)                          (scale_prior = "half_normal")
    for n in 1..N:
        z_n ~ Categorical(weights)                                  # summed out
        x_n ~ Normal(locs[z_n], diag(scales[z_n])^2)

Ordering the means removes label switching by construction (``zoo.distributions``), and
because the unordered prior is exchangeable, the ordered model has *the same* marginal
likelihood as the textbook one. ``posterior`` infers (weights, locs, scales) with z summed
out; ``latent`` fixes the globals at the instance's values and infers z, whose exact
posterior is the responsibilities.

References: Bishop (2006) *Pattern Recognition and Machine Learning* §9.2; Richardson &
Green (1997) JRSS B 59:731; Jasra, Holmes & Stephens (2005) Stat. Sci. 20:50 (label
switching); Pyro's GMM tutorial (enumeration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

from zoo.base import (SIMULATED, Draws, LatentTarget, ModelInfo, PosteriorTarget, Reference, Simulation, Target,
                      ZooModel, as_probabilities, generative_process)
from zoo.components import GaussianComponents
from zoo.datasets import POSTERIORDB, load_csv, load_posteriordb, standardise
from zoo.distributions import ShortMixture, ordered_first_column
from zoo.augmentation import DataAugmentation, TemperedGibbs
from zoo.em import EMSteps, dirichlet_mode, dirichlet_without_mode
from zoo.numerics import logsumexp_short, softmax_short
from zoo.validation import check_integer, check_num_datapoints, check_positive, validate_data

__all__ = ["GaussianMixture"]

#: The literal block of the module docstring (inside a class body ``__doc__`` is the class's).
_PROCESS = generative_process(__doc__)
_DEFAULT_3 = {"weights": (0.3, 0.4, 0.3), "locs": (-3.0, 0.0, 4.0), "scales": (0.5, 1.0, 0.7)}
_SITES = ("weights", "locs", "scales")
#: posteriordb's two-component mixture (zoo/datasets/posteriordb/README.md). Its Stan program,
#: ``ordered[2] mu; array[2] real<lower=0> sigma; real<lower=0, upper=1> theta; sigma ~
#: normal(0, 2); mu ~ normal(0, 2); theta ~ beta(5, 5); y ~ log_mix(theta, ...)``, is this
#: model with the configuration below: weights = (theta, 1 - theta).
_POSTERIORDB_MIXTURE = POSTERIORDB + "low_dim_gauss_mix"
_DIMS = {"weights": ("component",), "locs": ("component", "feature"), "scales": ("component", "feature")}


@dataclass(frozen=True)
class GaussianMixture(GaussianComponents, ZooModel):
    """Bayesian Gaussian mixture (see the module docstring for the generative process).

    True parameters default to the documented 1-D, K=3 mixture (weights 0.3/0.4/0.3, means
    -3/0/4, standard deviations 0.5/1.0/0.7). For other K or D they default to equal
    weights, first-coordinate means spaced 3.5 apart and centred on 0, and scales 0.7.
    ``locs`` and ``scales`` may be given as K numbers (D = 1) or K rows of D numbers. The
    prior hyperparameters of the components are :class:`~zoo.components.GaussianComponents`'.
    """

    num_components: int = 3
    dim: int = 1
    weights: tuple[float, ...] | None = None
    locs: tuple[Any, ...] | None = None
    scales: tuple[Any, ...] | None = None
    concentration: float = 1.0

    name = "gmm"
    true_parameter_fields = _SITES
    info = ModelInfo(
        generative_process=_PROCESS,
        global_sites=_SITES,
        local_sites=("assignment",),
        datasets={
            **SIMULATED,
            "old_faithful": "272 eruption durations of the Old Faithful geyser (1-D, standardised); "
                            "use dim=2 for (duration, waiting time)",
            _POSTERIORDB_MIXTURE: "posteriordb's low_dim_gauss_mix: 1,000 points of two well-separated components "
                                  "(1-D, raw), with its Stan program's priors (K=2, Beta(5,5) weight, N(0,2) "
                                  "means, half-normal(2) scales) and its Stan reference posterior",
        },
        dataset_configs={_POSTERIORDB_MIXTURE: {"num_components": 2, "dim": 1, "concentration": 5.0,
                                                "mean_prior_loc": 0.0, "mean_prior_scale": 2.0,
                                                "scale_prior": "half_normal", "scale_prior_loc": 0.0,
                                                "scale_prior_scale": 2.0}},
        literature=(
            "Bishop (2006) Pattern Recognition and Machine Learning, section 9.2",
            "Richardson & Green (1997) JRSS B 59:731-792",
            "Jasra, Holmes & Stephens (2005) Statistical Science 20:50-67",
        ),
    )

    def __post_init__(self) -> None:
        check_integer("gmm", "num_components", self.num_components, 1, 20)
        check_integer("gmm", "dim", self.dim, 1, 10)
        check_positive("gmm", "concentration", self.concentration)
        self.check_components("gmm", self.num_components, self.dim)
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
        if name == _POSTERIORDB_MIXTURE:
            self.check_dataset_config(name)
            return load_posteriordb("low_dim_gauss_mix")["y"].reshape(-1, 1)
        if name != "old_faithful":
            raise ValueError(f"gmm: unknown dataset {name!r}; accepted: old_faithful, {_POSTERIORDB_MIXTURE}")
        columns = load_csv("old_faithful")
        x = torch.stack([columns["eruptions_min"], columns["waiting_min"]], dim=-1)[:, : self.dim]
        if self.dim > 2:
            raise ValueError(f"gmm: old_faithful has 2 columns, the model has dim={self.dim}")
        return standardise(x)

    # --- generative model ------------------------------------------------------------
    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        check_num_datapoints("gmm", num_datapoints)
        params = self.true_params()
        generator = torch.Generator().manual_seed(seed)
        z = torch.multinomial(params["weights"], num_datapoints, replacement=True, generator=generator)
        noise = torch.randn(num_datapoints, self.dim, generator=generator, dtype=torch.float64)
        data = params["locs"][z] + params["scales"][z] * noise
        return Simulation(data=data, true_params=params, true_latents={"assignment": z})

    def priors(self) -> dict[str, dist.Distribution]:
        """The prior of each global site."""
        weights = dist.Dirichlet(torch.full((self.num_components,), float(self.concentration), dtype=torch.float64))
        return {"weights": weights, **self.component_priors(self.num_components, self.dim)}

    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Textbook form: z_n sampled, marked for parallel enumeration."""
        weights, locs, scales = self.sample_globals(params).values()
        # Shapes under an outer particle plate at dim -2: weights (S,1,K), locs (S,1,K,D).
        with pyro.plate("data", data.shape[0], dim=-1):
            z = pyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Normal(Vindex(locs)[..., z, :], Vindex(scales)[..., z, :]).to_event(1),
                        obs=data)

    def collapsed_model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Same density with z summed out analytically by ``MixtureSameFamily`` (its fast
        form for few components, :class:`~zoo.distributions.ShortMixture`)."""
        weights, locs, scales = self.sample_globals(params).values()
        with pyro.plate("data", data.shape[0], dim=-1):
            mixture = ShortMixture(dist.Categorical(weights), dist.Normal(locs, scales).to_event(1))
            pyro.sample("obs", mixture, obs=data)

    def guide(self, data: torch.Tensor) -> None:
        """Mean-field guide over the globals in their natural parameterisations."""
        concentration = pyro.param("weights_concentration", torch.full((self.num_components,), 10.0,
                                                                       dtype=torch.float64),
                                   constraint=constraints.positive)
        pyro.sample("weights", dist.Dirichlet(concentration))
        self.component_guide(self.start_locs(self.validate(data)))

    def start_locs(self, data: torch.Tensor) -> torch.Tensor:
        """(K, D) means to start from: first coordinates at evenly spaced quantiles of the
        data, the others at the data mean."""
        K = self.num_components
        start = data.mean(0).expand(K, self.dim).clone()
        start[:, 0] = data[:, 0].quantile(torch.linspace(0.5 / K, 1 - 0.5 / K, K, dtype=torch.float64))
        return start

    def component_log_lik(self, data: torch.Tensor, weights: torch.Tensor, locs: torch.Tensor,
                          scales: torch.Tensor) -> torch.Tensor:
        """(S, N, K): log weights_k + log N(x_n | locs_k, scales_k) for each of S draws."""
        x = data[None, :, None, :]  # (1, N, 1, D)
        normal = dist.Normal(locs[:, None], scales[:, None]).log_prob(x).sum(-1)
        return weights.log()[:, None, :] + normal

    def target(self, data: Any, target: str) -> Target:
        self.check_target(target)
        data = self.validate(data)
        return MixturePosterior(self, data) if target == "posterior" else MixtureLatent(self, data)


class MixturePosterior(EMSteps, DataAugmentation, PosteriorTarget):
    """The globals (weights, locs, scales), assignments summed out. EM's E-step is the
    responsibilities; its M-steps are the Dirichlet mode of the weights and the components'
    conditional modes (Bishop 2006 §9.2.2, with the priors)."""

    max_plate_nesting = 1
    dims = _DIMS

    def draw_locals(self, draws: Draws) -> torch.Tensor:
        return dist.Categorical(logits=self._component_log_lik(draws)).sample()

    def complete_log_likelihood(self, draws: Draws, locals_: torch.Tensor) -> torch.Tensor:
        return self._component_log_lik(draws).gather(-1, locals_.unsqueeze(-1)).sum((-1, -2))

    def em_not_applicable(self) -> str | None:
        return (dirichlet_without_mode(concentration=self.zoo_model.concentration)
                or self.zoo_model.components_without_mode())

    def data_start(self) -> Draws:
        mixture, x = self.zoo_model, self.data
        K = mixture.num_components
        return {"weights": torch.full((1, K), 1.0 / K, dtype=torch.float64),
                "locs": mixture.start_locs(x)[None],
                "scales": x.std(0).expand(1, K, mixture.dim).clone()}

    def em_step(self, params: Draws) -> Draws:
        mixture = self.zoo_model
        responsibilities = softmax_short(self._component_log_lik(params)[0])  # (N, K)
        weights = dirichlet_mode(responsibilities.sum(0), mixture.concentration)
        locs, scales = mixture.component_mode(self.data, responsibilities, params["scales"][0])
        order = locs[:, 0].argsort()  # relabel: the log joint is invariant, the prior's order kept
        return {"weights": weights[order][None], "locs": locs[order][None], "scales": scales[order][None]}

    def _component_log_lik(self, draws: Draws) -> torch.Tensor:
        return self.zoo_model.component_log_lik(self.data, *(draws[site] for site in _SITES))

    def log_likelihood(self, draws: Draws) -> torch.Tensor:
        return self.pointwise_log_likelihood(draws).sum(-1)

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        return logsumexp_short(self._component_log_lik(draws))

    def local_marginals(self, draws: Draws) -> Draws:
        return {"assignment": softmax_short(self._component_log_lik(draws))}


class MixtureLatent(TemperedGibbs, LatentTarget):
    """The assignments, the globals fixed at the model's true values; exact by enumeration."""

    latent_sites = discrete_sites = ("assignment",)
    max_plate_nesting = 1
    dims = {"assignment": ("datapoint",)}
    has_exact = True

    def __init__(self, mixture: GaussianMixture, data: torch.Tensor) -> None:
        super().__init__(mixture, data)
        self.num_components = mixture.num_components
        #: (N, K) log weights_k + log p(x_n | z_n = k, theta), and the likelihood part alone.
        self.component = mixture.component_log_lik(data, *(self.params[site][None] for site in _SITES))[0]
        self.emission = self.component - self.params["weights"].log()

    def _probabilities(self, draws: Draws) -> torch.Tensor:
        return as_probabilities(draws["assignment"], self.num_components)

    def log_density(self, draws: Draws) -> torch.Tensor:
        return (self.component * self._probabilities(draws)).sum((-1, -2))

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        return (self.emission * self._probabilities(draws)).sum(-1)

    def quantities(self, draws: Draws) -> Draws:
        return {}

    def local_marginals(self, draws: Draws) -> Draws:
        return {"assignment": self._probabilities(draws)}

    def prior_locals(self, num_draws: int) -> Draws:
        return self.gibbs_sweep({}, torch.zeros(num_draws, dtype=torch.float64))

    def gibbs_sweep(self, draws: Draws, beta: torch.Tensor) -> Draws:
        """The assignments are independent given the globals: the sweep draws each from its
        tempered conditional, w_k p(x_n | k)^beta, whatever it was."""
        logits = self.params["weights"].log() + beta[:, None, None] * self.emission
        return {"assignment": dist.Categorical(logits=logits).sample()}

    def exact_draws(self, num_draws: int) -> Draws:
        """Each assignment independently from its responsibilities."""
        responsibilities = self.component.softmax(-1)
        return {"assignment": torch.multinomial(responsibilities, num_draws, replacement=True).T}

    def exact(self) -> Reference:
        return Reference(
            log_evidence=float(self.component.logsumexp(-1).sum()),
            log_evidence_se=0.0,
            exact=True,
            moments={},
            local_marginals={"assignment": self.component.softmax(-1)},
            provenance={"method": "exact: log p(x|theta) = sum_n logsumexp_k; responsibilities by Bayes' rule",
                        "model": self.zoo_model.name, "config": self.zoo_model.config()},
        )
