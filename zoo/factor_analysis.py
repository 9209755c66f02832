"""Bayesian factor analysis and probabilistic PCA: D observed dimensions, k < D factors.

Generative process (factor analysis)::

    loc               ~ Normal(0, loc_prior_scale^2 I_D)
    loadings_diagonal ~ HalfNormal(loading_prior_scale), shape (k,)        # W_jj > 0
    loadings_lower    ~ Normal(0, loading_prior_scale^2), shape (Dk - k(k+1)/2,)
    W                 = the D x k lower-triangular matrix with that diagonal and that
                        strictly-lower part (row-major), zeros above the diagonal
    noise             ~ LogNormal(noise_prior_loc, noise_prior_scale), shape (D,)
    for n in 1..N:
        f_n ~ Normal(0, I_k)                                         # "factors"
        x_n ~ Normal(loc + W f_n, diag(noise)^2)
    (collapsed: x_n ~ Normal(loc, W W^T + diag(noise)^2))

Generative process (probabilistic PCA)::

    the same, except that noise ~ LogNormal(noise_prior_loc, noise_prior_scale) is one
    scalar shared by every dimension: x_n ~ Normal(loc + W f_n, noise^2 I_D)

Identifiability. The likelihood depends on W only through W W^T, so W R fits as well as W
for any orthogonal R (the rotation ridge: with an unconstrained W, NUTS needs ~15x more
leapfrog steps, measured when the model was built). Every W of full column rank can be rotated to a unique
lower-triangular matrix with positive diagonal (the LQ decomposition), so the model
samples W in that form (Geweke & Zhou 1996; Lopes & West 2004): the diagonal and the
strictly-lower part are separate sites. This removes rotations *and* column sign flips
without changing the set of covariances the model can express. Scores still use
rotation-invariant quantities only: the covariance W W^T + Psi, the noise variances Psi and
loc. ``posterior`` infers the globals with the factors integrated out (a dense Cholesky of
W W^T + Psi, see ``_marginal``); ``latent`` fixes the globals at the instance's values and
infers the factors, whose posterior is Gaussian and exact:
p(f_n | x_n) = Normal(M^{-1} W^T Psi^{-1} (x_n - loc), M^{-1}) with M = I + W^T Psi^{-1} W.

References: Bishop (2006) *Pattern Recognition and Machine Learning* §12.2; Tipping & Bishop
(1999) JRSS B 61:611 (PPCA and its maximum-likelihood solution); Geweke & Zhou (1996) RFS
9:557 and Lopes & West (2004) Stat. Sinica 14:41 (lower-triangular identification);
Rubin & Thayer (1982) Psychometrika 47:69 (EM for factor analysis).
"""

from __future__ import annotations

import abc
import math
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from zoo.base import (SIMULATED, Draws, LatentTarget, ModelInfo, Moments, PosteriorTarget, Reference, Simulation,
                      Target, ZooModel, generative_process, tensor_as_field)
from zoo.datasets import standardise
from zoo.em import EMSteps, lognormal_scale_mode
from zoo.exact.gaussian import factor_posterior, ppca_maximum_likelihood
from zoo.validation import check_integer, check_num_datapoints, check_positive, validate_data

__all__ = ["FactorAnalysis", "ProbabilisticPCA", "assemble_loadings", "split_loadings"]

_F64 = torch.float64


# --- linear algebra shared by the model, its references and its initialiser -----------
def assemble_loadings(diagonal: torch.Tensor, lower: torch.Tensor, dim: int) -> torch.Tensor:
    """The (..., D, k) lower-triangular W from its diagonal (..., k) and its strictly-lower
    entries (..., Dk - k(k+1)/2) in row-major order; batch dims broadcast."""
    k = diagonal.shape[-1]
    batch = torch.broadcast_shapes(diagonal.shape[:-1], lower.shape[:-1])
    rows, cols = torch.tril_indices(dim, k, offset=-1)
    loadings = diagonal.new_zeros(batch + (dim, k))
    loadings[..., rows, cols] = lower.expand(batch + lower.shape[-1:])
    index = torch.arange(k)
    loadings[..., index, index] = diagonal.expand(batch + (k,))
    return loadings


def split_loadings(loadings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`assemble_loadings`: (diagonal, strictly-lower entries)."""
    dim, k = loadings.shape[-2:]
    rows, cols = torch.tril_indices(dim, k, offset=-1)
    return loadings.diagonal(dim1=-2, dim2=-1), loadings[..., rows, cols]


_FA_PROCESS = generative_process(__doc__, "Generative process (factor analysis)")
_PPCA_PROCESS = _FA_PROCESS + "\n\n" + generative_process(__doc__, "Generative process (probabilistic PCA)")
_LITERATURE = (
    "Bishop (2006) Pattern Recognition and Machine Learning, section 12.2",
    "Tipping & Bishop (1999) JRSS B 61:611-622",
    "Geweke & Zhou (1996) Review of Financial Studies 9:557-587",
    "Lopes & West (2004) Statistica Sinica 14:41-67",
)
_DATASETS = {
    **SIMULATED,
    "wine": "scikit-learn's wine recognition data: 178 wines x 13 chemical measurements, standardised; "
            "needs dim=13",
    "iris": "scikit-learn's iris data: 150 flowers x 4 measurements, standardised; needs dim=4",
}
_DATASET_WIDTHS = {"wine": 13, "iris": 4}
_GLOBAL_SITES = ("loc", "loadings_diagonal", "loadings_lower", "noise")


@dataclass(frozen=True)
class _LinearGaussianFactorModel(ZooModel):
    """Shared code of factor analysis and PPCA (``isotropic`` selects the noise model).

    True parameters default to loc = 0, W with unit diagonal and strictly-lower entries
    0.5 (zeros above: already in the sampled form), and the noise documented by each
    subclass. ``loadings`` may be given as D rows of k numbers, lower-triangular with a
    positive diagonal (rotate any W into that form with
    :func:`zoo.exact.gaussian.lower_triangular_form`).
    """

    dim: int = 6
    num_factors: int = 2
    loc: tuple[float, ...] | None = None
    loadings: tuple[Any, ...] | None = None
    #: Priors fit standardised data: loc within a few sd of 0, loadings of order one, and
    #: noise sds with median e^-1 ~ 0.37 and 95% in (0.05, 2.6).
    loc_prior_scale: float = 2.0
    loading_prior_scale: float = 1.0
    noise_prior_loc: float = -1.0
    noise_prior_scale: float = 1.0

    isotropic: ClassVar[bool]

    def __post_init__(self) -> None:
        check_integer(self.name, "dim", self.dim, 2, 100)
        check_integer(self.name, "num_factors", self.num_factors, 1, self.dim - 1,
                      f" (fewer factors than dim={self.dim})")
        for key in ("loc_prior_scale", "loading_prior_scale", "noise_prior_scale"):
            check_positive(self.name, key, getattr(self, key))
        if not (isinstance(self.noise_prior_loc, (int, float)) and math.isfinite(self.noise_prior_loc)):
            raise ValueError(f"{self.name}: noise_prior_loc must be a finite number, got {self.noise_prior_loc!r}")
        self.true_params()  # validates user-given parameters

    # --- noise model (the one difference between the two models) -----------------------
    @abc.abstractmethod
    def _true_noise(self) -> torch.Tensor:
        """The true noise scale(s): D of them for factor analysis, one for PPCA."""

    def _noise_shape(self) -> tuple[int, ...]:
        return () if self.isotropic else (self.dim,)

    def noise_variances(self, noise: torch.Tensor) -> torch.Tensor:
        """Noise sds, (...,) for PPCA or (..., D) for FA, as (..., D) variances."""
        variances = noise ** 2
        if self.isotropic:
            return variances.unsqueeze(-1).expand(variances.shape + (self.dim,))
        return variances

    # --- parameters ------------------------------------------------------------------
    def true_params(self) -> dict[str, torch.Tensor]:
        D, k = self.dim, self.num_factors
        if self.loc is None:
            loc = torch.zeros(D, dtype=_F64)
        else:
            loc = torch.tensor(self.loc, dtype=_F64)
            if loc.shape != (D,) or not torch.isfinite(loc).all():
                raise ValueError(f"{self.name}: loc must be {D} finite numbers, got {self.loc}")
        if self.loadings is None:
            loadings = torch.full((D, k), 0.5, dtype=_F64).tril(-1) + torch.eye(D, k, dtype=_F64)
        else:
            try:
                loadings = torch.tensor(self.loadings, dtype=_F64)
            except (TypeError, ValueError):
                loadings = None
            if (loadings is None or loadings.shape != (D, k) or not torch.isfinite(loadings).all()
                    or (loadings.triu(1) != 0).any() or (loadings.diagonal() <= 0).any()):
                raise ValueError(
                    f"{self.name}: loadings must be {D} rows of {k} finite numbers, lower-triangular with a "
                    f"positive diagonal (rotate with zoo.exact.gaussian.lower_triangular_form), got {self.loadings}")
        diagonal, lower = split_loadings(loadings)
        return {"loc": loc, "loadings": loadings, "loadings_diagonal": diagonal.clone(),
                "loadings_lower": lower.clone(), "noise": self._true_noise()}

    def with_params(self, params: Mapping[str, torch.Tensor]) -> "_LinearGaussianFactorModel":
        """The sites (loc, loadings_diagonal, loadings_lower, noise) as the fields (loc,
        loadings, and noise_scales or noise_scale, the last true-parameter field)."""
        loadings = assemble_loadings(params["loadings_diagonal"], params["loadings_lower"], self.dim)
        return dataclasses.replace(self, loc=tensor_as_field(params["loc"]), loadings=tensor_as_field(loadings),
                                   **{self.true_parameter_fields[-1]: tensor_as_field(params["noise"])})

    def validate(self, data: Any) -> torch.Tensor:
        return validate_data(data, name=self.name, ndim=(2,), width=self.dim)

    def load_dataset(self, name: str) -> torch.Tensor:
        if name not in _DATASET_WIDTHS:
            raise ValueError(f"{self.name}: unknown dataset {name!r}; accepted: {', '.join(_DATASET_WIDTHS)}")
        if _DATASET_WIDTHS[name] != self.dim:
            raise ValueError(f"{self.name}: dataset {name!r} has {_DATASET_WIDTHS[name]} columns but the model "
                             f"has dim={self.dim}; construct it with dim={_DATASET_WIDTHS[name]}")
        from sklearn import datasets  # local import: only these loaders need scikit-learn

        loader = {"wine": datasets.load_wine, "iris": datasets.load_iris}[name]
        return standardise(torch.as_tensor(loader().data, dtype=_F64))

    # --- generative model ------------------------------------------------------------
    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        check_num_datapoints(self.name, num_datapoints)
        params = self.true_params()
        generator = torch.Generator().manual_seed(seed)
        factors = torch.randn(num_datapoints, self.num_factors, generator=generator, dtype=_F64)
        noise = torch.randn(num_datapoints, self.dim, generator=generator, dtype=_F64)
        scales = self.noise_variances(params["noise"]).sqrt()
        data = params["loc"] + factors @ params["loadings"].T + scales * noise
        return Simulation(data=data, true_params=params, true_latents={"factors": factors})

    def priors(self) -> dict[str, dist.Distribution]:
        """The prior of each global site."""
        D, k = self.dim, self.num_factors
        num_lower = D * k - k * (k + 1) // 2
        scale = torch.tensor(float(self.loading_prior_scale), dtype=_F64)
        noise = dist.LogNormal(torch.tensor(float(self.noise_prior_loc), dtype=_F64),
                               torch.tensor(float(self.noise_prior_scale), dtype=_F64))
        return {
            "loc": dist.Normal(torch.zeros(D, dtype=_F64), float(self.loc_prior_scale)).to_event(1),
            "loadings_diagonal": dist.HalfNormal(scale).expand([k]).to_event(1),
            "loadings_lower": dist.Normal(torch.zeros(num_lower, dtype=_F64), scale).to_event(1),
            "noise": noise if self.isotropic else noise.expand([D]).to_event(1),
        }

    def _globals(self, params: Mapping[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loc, W, noise variances); under a particle plate at dim -2 their shapes are
        (S, 1, D), (S, 1, D, k) and (S, 1, D)."""
        if params is not None:
            return params["loc"], params["loadings"], self.noise_variances(params["noise"])
        value = self.sample_globals()
        loadings = assemble_loadings(value["loadings_diagonal"], value["loadings_lower"], self.dim)
        return value["loc"], loadings, self.noise_variances(value["noise"])

    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Textbook form: the factors are explicit local latent sites in the data plate."""
        loc, loadings, variances = self._globals(params)
        with pyro.plate("data", data.shape[0], dim=-1):
            factors = pyro.sample("factors", dist.Normal(torch.zeros(self.num_factors, dtype=_F64), 1.0).to_event(1))
            # W f for every particle and data point: (..., D, k) @ (..., N, k, 1) -> (..., N, D).
            mean = loc + (loadings @ factors.unsqueeze(-1)).squeeze(-1)
            pyro.sample("obs", dist.Normal(mean, variances.sqrt()).to_event(1), obs=data)

    def collapsed_model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Same density with the factors integrated out: x_n ~ Normal(loc, W W^T + Psi)."""
        loc, loadings, variances = self._globals(params)
        with pyro.plate("data", data.shape[0], dim=-1):
            pyro.sample("obs", self.marginal(loc, loadings, variances), obs=data)

    def guide(self, data: torch.Tensor) -> None:
        """Mean-field guide over the globals, started at the closed-form PPCA maximum
        likelihood solution (for FA too: every noise sd starts at the PPCA one)."""
        start = ppca_maximum_likelihood(self.validate(data), self.num_factors)
        diagonal, lower = split_loadings(start["loadings"])
        small = dict(constraint=constraints.positive)
        loc_loc = pyro.param("loc_loc", start["loc"].clone())
        loc_scale = pyro.param("loc_scale", torch.full((self.dim,), 0.1, dtype=_F64), **small)
        pyro.sample("loc", dist.Normal(loc_loc, loc_scale).to_event(1))
        diagonal_loc = pyro.param("loadings_diagonal_loc", diagonal.clamp_min(1e-3).log())
        diagonal_scale = pyro.param("loadings_diagonal_scale", torch.full_like(diagonal, 0.1), **small)
        pyro.sample("loadings_diagonal", dist.LogNormal(diagonal_loc, diagonal_scale).to_event(1))
        lower_loc = pyro.param("loadings_lower_loc", lower.clone())
        lower_scale = pyro.param("loadings_lower_scale", torch.full_like(lower, 0.1), **small)
        pyro.sample("loadings_lower", dist.Normal(lower_loc, lower_scale).to_event(1))
        noise_start = start["noise"].clamp_min(1e-3).log().expand(self._noise_shape()).clone()
        noise_loc = pyro.param("noise_loc", noise_start)
        noise_scale = pyro.param("noise_scale", torch.full_like(noise_start, 0.1), **small)
        noise = dist.LogNormal(noise_loc, noise_scale)
        pyro.sample("noise", noise if self.isotropic else noise.to_event(1))

    # --- quantities, likelihoods, references -------------------------------------------
    def marginal(self, loc: torch.Tensor, loadings: torch.Tensor, variances: torch.Tensor) -> dist.Distribution:
        """Normal(loc, W W^T + Psi) through a dense D x D Cholesky of the covariance.

        Not ``LowRankMultivariateNormal``: its Woodbury form cancels catastrophically when a
        noise variance is tiny (a Heywood case, which a Student-t proposal's tail reaches). At
        Psi_2 = e^-40 it gave -2805 where the density is -1939, and at one proposal draw
        +7.4e6. The Cholesky of the covariance itself is backward stable, and for D <= 13 it
        is also faster (0.8 vs 1.2 ms per log density and gradient at N = 200, D = 6)."""
        covariance = loadings @ loadings.transpose(-1, -2) + torch.diag_embed(variances)
        # A covariance that is not positive definite in float64 (a draw far out in a proposal's
        # tail, or a sampler's wild step, where the density has underflowed anyway) makes its
        # own draw's density NaN, not an exception that loses the whole batch (rule 1 of Target).
        cholesky, info = torch.linalg.cholesky_ex(covariance)
        cholesky = torch.where((info == 0)[..., None, None], cholesky, torch.full_like(cholesky, math.nan))
        return dist.MultivariateNormal(loc, scale_tril=cholesky)

    def target(self, data: Any, target: str) -> Target:
        self.check_target(target)
        data = self.validate(data)
        return FactorPosterior(self, data) if target == "posterior" else FactorLatent(self, data)


def _info(process: str, literature: tuple[str, ...]) -> ModelInfo:
    return ModelInfo(generative_process=process, global_sites=_GLOBAL_SITES, local_sites=("factors",),
                     datasets=_DATASETS, literature=literature)


@dataclass(frozen=True)
class FactorAnalysis(_LinearGaussianFactorModel):
    """Bayesian factor analysis: diagonal noise covariance diag(noise)^2 (see the module
    docstring). ``noise_scales`` (D noise sds) default to D values evenly spaced from 0.4
    to 0.8, so that the simulated noise is visibly not isotropic."""

    noise_scales: tuple[float, ...] | None = None

    name = "factor_analysis"
    isotropic = False
    true_parameter_fields = ("loc", "loadings", "noise_scales")
    info = _info(_FA_PROCESS, _LITERATURE + ("Rubin & Thayer (1982) Psychometrika 47:69-76",))

    def _true_noise(self) -> torch.Tensor:
        if self.noise_scales is None:
            return torch.linspace(0.4, 0.8, self.dim, dtype=_F64)
        try:
            noise = torch.tensor(self.noise_scales, dtype=_F64)
        except (TypeError, ValueError):
            noise = None
        if noise is None or noise.shape != (self.dim,) or not (torch.isfinite(noise) & (noise > 0)).all():
            raise ValueError(f"{self.name}: noise_scales must be {self.dim} positive numbers, got {self.noise_scales}")
        return noise


@dataclass(frozen=True)
class ProbabilisticPCA(_LinearGaussianFactorModel):
    """Probabilistic PCA: isotropic noise covariance noise^2 I (see the module docstring).
    ``noise_scale`` (the noise sd) defaults to 0.5. Its maximum-likelihood solution is
    :func:`zoo.exact.gaussian.ppca_maximum_likelihood`."""

    noise_scale: float = 0.5

    name = "ppca"
    isotropic = True
    true_parameter_fields = ("loc", "loadings", "noise_scale")
    info = _info(_PPCA_PROCESS, _LITERATURE)

    def _true_noise(self) -> torch.Tensor:
        check_positive(self.name, "noise_scale", self.noise_scale)
        return torch.tensor(float(self.noise_scale), dtype=_F64)


class FactorPosterior(EMSteps, PosteriorTarget):
    """The globals (loc, the loadings' diagonal and lower part, noise), factors integrated out.

    EM is Rubin & Thayer's (1982) with the priors: the E-step is Gaussian conditioning of the
    factors; the M-step takes each row of (W, loc) jointly, a ridge regression on the
    expected factors (the prior's precisions as the ridge, and only the row's free entries
    of the lower-triangular W), then the noise sds given them."""

    max_plate_nesting = 1

    @property
    def dims(self) -> Mapping[str, tuple[str, ...]]:
        noise = () if self.zoo_model.isotropic else ("feature",)
        return {"loc": ("feature",), "loadings_diagonal": ("factor",), "loadings_lower": ("loading",),
                "noise": noise}

    def model(self) -> None:
        # The factors are continuous: they cannot be enumerated, so both forms integrate them
        # out (the explicit-factor model is for the latent target and for users).
        self.zoo_model.collapsed_model(self.data)

    def _params(self, draws: Draws) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loc, W, noise variances) of each draw."""
        loadings = assemble_loadings(draws["loadings_diagonal"], draws["loadings_lower"], self.zoo_model.dim)
        return draws["loc"], loadings, self.zoo_model.noise_variances(draws["noise"])

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        loc, loadings, variances = self._params(draws)
        return self.zoo_model.marginal(loc[:, None], loadings[:, None], variances[:, None]).log_prob(self.data)

    def log_likelihood(self, draws: Draws) -> torch.Tensor:
        return self.pointwise_log_likelihood(draws).sum(-1)

    def data_start(self) -> Draws:
        start = ppca_maximum_likelihood(self.data, self.zoo_model.num_factors)
        diagonal, lower = split_loadings(start["loadings"])
        return {"loc": start["loc"][None], "loadings_diagonal": diagonal[None], "loadings_lower": lower[None],
                "noise": start["noise"].expand((1,) + self.zoo_model._noise_shape()).clone()}

    def em_step(self, params: Draws) -> Draws:
        fm, x = self.zoo_model, self.data
        (loc,), (loadings,), (variances,) = self._params(params)
        (N, D), k = x.shape, fm.num_factors
        mean, covariance = factor_posterior(x, loc, loadings, variances)
        # Sufficient statistics of the augmented regressors (f_n, 1): E-sums of their outer
        # products (k+1, k+1) and of x_nd times them (D, k+1).
        regressors = torch.cat([mean, torch.ones(N, 1, dtype=_F64)], -1)
        outer = regressors.T @ regressors
        outer[:k, :k] += N * covariance
        cross = x.T @ regressors
        prior_precision = torch.tensor([fm.loading_prior_scale ** -2] * k + [fm.loc_prior_scale ** -2], dtype=_F64)
        rows, sum_squares = torch.zeros(D, k + 1, dtype=_F64), torch.zeros(D, dtype=_F64)
        for d in range(D):
            free = list(range(min(d + 1, k))) + [k]  # row d of W is zero right of its diagonal
            block = outer[free][:, free] + variances[d] * torch.diag(prior_precision[free])
            rows[d, free] = torch.linalg.solve(block, cross[d, free])
            beta = rows[d, free]
            sum_squares[d] = x[:, d] @ x[:, d] - 2 * beta @ cross[d, free] + beta @ outer[free][:, free] @ beta
        new_loadings, new_loc = rows[:, :k], rows[:, k]
        # A column's sign is the factor's: flipping both keeps the log joint (the diagonal's
        # half-normal prior is the normal one folded), and the model keeps a positive diagonal.
        new_loadings = new_loadings * torch.where(new_loadings.diagonal() < 0, -1.0, 1.0).to(_F64)
        count = torch.tensor(float(N))
        if fm.isotropic:
            count, sum_squares = count * D, sum_squares.sum()
        noise = lognormal_scale_mode(count, sum_squares, fm.noise_prior_loc, fm.noise_prior_scale)
        diagonal, lower = split_loadings(new_loadings)
        return {"loc": new_loc[None], "loadings_diagonal": diagonal[None], "loadings_lower": lower[None],
                "noise": noise[None]}

    def quantities(self, draws: Draws) -> Draws:
        """Rotation-invariant quantities only (W itself is identified only up to rotation)."""
        loc, loadings, variances = self._params(draws)
        covariance = loadings @ loadings.transpose(-1, -2) + torch.diag_embed(variances)
        return {"loc": loc, "covariance": covariance, "noise_variances": variances}


class FactorLatent(LatentTarget):
    """The factors, the globals fixed at the model's true values; exact by Gaussian conditioning."""

    latent_sites = ("factors",)
    max_plate_nesting = 1
    dims = {"factors": ("datapoint", "factor")}
    has_exact = True

    def __init__(self, factor_model: _LinearGaussianFactorModel, data: torch.Tensor) -> None:
        super().__init__(factor_model, data)
        self.variances = factor_model.noise_variances(self.params["noise"])

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        mean = self.params["loc"] + draws["factors"] @ self.params["loadings"].T  # (S, N, D)
        return dist.Normal(mean, self.variances.sqrt()).log_prob(self.data).sum(-1)

    def log_density(self, draws: Draws) -> torch.Tensor:
        prior = dist.Normal(0.0, 1.0).log_prob(draws["factors"]).sum((-1, -2))
        return prior + self.pointwise_log_likelihood(draws).sum(-1)

    def quantities(self, draws: Draws) -> Draws:
        return {"factors": draws["factors"]}

    def exact_draws(self, num_draws: int) -> Draws:
        """Each data point's factors from their Gaussian posterior."""
        mean, covariance = factor_posterior(self.data, self.params["loc"], self.params["loadings"], self.variances)
        noise = torch.randn((num_draws,) + mean.shape, dtype=mean.dtype)
        return {"factors": mean + noise @ torch.linalg.cholesky(covariance).T}

    def exact(self) -> Reference:
        loc, loadings = self.params["loc"], self.params["loadings"]
        mean, covariance = factor_posterior(self.data, loc, loadings, self.variances)
        sd = covariance.diagonal().sqrt().expand_as(mean).clone()
        return Reference(
            log_evidence=float(self.zoo_model.marginal(loc, loadings, self.variances).log_prob(self.data).sum()),
            log_evidence_se=0.0,
            exact=True,
            moments={"factors": Moments(mean, sd, torch.zeros_like(mean))},
            local_marginals={},
            provenance={"method": "exact: log p(x|theta) = sum_n log Normal(x_n | loc, W W^T + Psi); "
                                  "p(f_n|x_n) = Normal(M^-1 W^T Psi^-1 (x_n - loc), M^-1), "
                                  "M = I + W^T Psi^-1 W",
                        "model": self.zoo_model.name, "config": self.zoo_model.config()},
        )
