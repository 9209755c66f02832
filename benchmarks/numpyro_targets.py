"""NumPyro versions of the zoo's ``posterior`` targets, to benchmark NumPyro's NUTS against
the zoo's own samplers.

Each model in :data:`MODELS` (``ppca`` shares factor analysis's code) has the zoo target's
continuous latent sites (names, shapes, supports), its priors with the hyperparameters
read from the zoo model instance, and its likelihood with the locals summed out: a
logsumexp over the mixture's components, the forward algorithm (``jax.lax.scan``) over the
HMM's states, the Gaussian marginal Normal(loc, W W^T + diag(noise)^2) of factor analysis.
The zoo's ordered means are :class:`OrderedNormal` here, whose support maps to R^n by
NumPyro's ``OrderedTransform`` (K numbers) or :class:`OrderedFirstColumnTransform` (K rows).

:func:`check_log_density` checks at prior draws that NumPyro's log joint equals
``target.log_density`` up to an additive constant. ``python -m benchmarks.numpyro_targets``
checks every model and runs a short NUTS on each.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import torch
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import OrderedTransform, ParameterFreeTransform, biject_to
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import log_density

import zoo
from inference_comparisons.sweep.plan import load_data
from zoo.base import PosteriorTarget, ZooModel

jax.config.update("jax_enable_x64", True)  # before any array is made: the zoo is float64

__all__ = ["MODELS", "OrderedNormal", "check_log_density", "numpyro_model", "run_nuts"]

#: Largest accepted spread of (NumPyro - zoo) log densities across draws.
TOLERANCE = 1e-6


# --- ordered means ------------------------------------------------------------------------
class _OrderedFirstColumn(constraints.ParameterFreeConstraint):
    """(K, D) matrices whose first column is strictly increasing (the zoo's constraint)."""

    event_dim = 2

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        first = x[..., 0]
        return (first[..., 1:] > first[..., :-1]).all(-1)


ordered_first_column = _OrderedFirstColumn()


class OrderedFirstColumnTransform(ParameterFreeTransform):
    """R^{K x D} -> ordered_first_column, the zoo's: ``OrderedTransform`` on column 0."""

    domain = constraints.independent(constraints.real, 2)
    codomain = ordered_first_column

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return x.at[..., 0].set(OrderedTransform()(x[..., 0]))

    def _inverse(self, y: jnp.ndarray) -> jnp.ndarray:
        return y.at[..., 0].set(OrderedTransform().inv(y[..., 0]))

    def log_abs_det_jacobian(self, x: jnp.ndarray, y: jnp.ndarray, intermediates: Any = None) -> jnp.ndarray:
        return x[..., 1:, 0].sum(-1)


biject_to.register(_OrderedFirstColumn)(lambda constraint: OrderedFirstColumnTransform())


class OrderedNormal(dist.Distribution):
    """``zoo.distributions.OrderedNormal``: density ``K! prod_k Normal(mu_k | loc, scale^2 I)``
    on K increasing numbers (``dim=None``) or K rows of ``dim`` ordered by their first entry."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    pytree_aux_fields = ("num_components", "dim")

    def __init__(self, loc: float, scale: float, num_components: int, dim: int | None = None) -> None:
        self.loc, self.scale = jnp.asarray(loc, dtype=jnp.float64), jnp.asarray(scale, dtype=jnp.float64)
        self.num_components, self.dim = num_components, dim
        super().__init__(batch_shape=(), event_shape=(num_components,) if dim is None else (num_components, dim))

    @property
    def support(self) -> constraints.Constraint:
        return constraints.ordered_vector if self.dim is None else ordered_first_column

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jnp.ndarray:
        x = self.loc + self.scale * jax.random.normal(key, sample_shape + self.event_shape)
        if self.dim is None:
            return jnp.sort(x, -1)
        return jnp.take_along_axis(x, jnp.argsort(x[..., 0], -1)[..., None], axis=-2)

    def log_prob(self, value: jnp.ndarray) -> jnp.ndarray:
        event_axes = tuple(range(-len(self.event_shape), 0))
        return dist.Normal(self.loc, self.scale).log_prob(value).sum(event_axes) + math.lgamma(self.num_components + 1)


# --- the models -----------------------------------------------------------------------------
def _components(zoo_model: Any, num_components: int, dim: int | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Sites ``locs`` (ordered means) and ``scales`` (log-normal) with the hyperparameters of
    a zoo model's ``GaussianComponents``: K numbers each, or K rows of ``dim`` numbers."""
    locs = numpyro.sample("locs", OrderedNormal(zoo_model.mean_prior_loc, zoo_model.mean_prior_scale,
                                                num_components, dim))
    scales = dist.LogNormal(float(zoo_model.scale_prior_loc), float(zoo_model.scale_prior_scale))
    return locs, numpyro.sample("scales", scales.expand(locs.shape).to_event(locs.ndim))


def gmm_model(zoo_model: Any, data: jnp.ndarray) -> None:
    """The Gaussian mixture, data (N, D), the assignments summed out by a logsumexp."""
    K = zoo_model.num_components
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.full(K, float(zoo_model.concentration))))
    locs, scales = _components(zoo_model, K, zoo_model.dim)
    # (N, K): log w_k + sum_d log Normal(x_nd | locs_kd, scales_kd)
    component = jnp.log(weights) + dist.Normal(locs, scales).log_prob(data[:, None, :]).sum(-1)
    numpyro.factor("obs", logsumexp(component, -1).sum())


def _forward_log_evidence(log_initial: jnp.ndarray, log_transition: jnp.ndarray,
                          log_emission: jnp.ndarray) -> jnp.ndarray:
    """log p(x_{1..T}) by the forward algorithm in log space; ``log_emission`` is (T, K)."""

    def step(alpha: jnp.ndarray, log_emitted: jnp.ndarray) -> tuple[jnp.ndarray, None]:
        return logsumexp(alpha[:, None] + log_transition, 0) + log_emitted, None

    alpha, _ = jax.lax.scan(step, log_initial + log_emission[0], log_emission[1:])
    return logsumexp(alpha)


def hmm_model(zoo_model: Any, data: jnp.ndarray) -> None:
    """The Gaussian HMM, data (T,), the states summed out by the forward algorithm."""
    K = zoo_model.num_states
    initial = numpyro.sample("initial", dist.Dirichlet(jnp.full(K, float(zoo_model.initial_concentration))))
    rows = dist.Dirichlet(jnp.full((K, K), float(zoo_model.transition_concentration)))
    transition = numpyro.sample("transition", rows.to_event(1))
    locs, scales = _components(zoo_model, K)
    log_emission = dist.Normal(locs, scales).log_prob(data[:, None])  # (T, K)
    numpyro.factor("obs", _forward_log_evidence(jnp.log(initial), jnp.log(transition), log_emission))


def _gaussian_log_likelihood(data: jnp.ndarray, loc: jnp.ndarray, covariance: jnp.ndarray) -> jnp.ndarray:
    """sum_n log Normal(x_n | loc, covariance) for data (N, D) by a dense Cholesky factor L,
    as the zoo's ``marginal`` (NaN where the covariance is not positive definite). The data
    are whitened by the D x D L^{-1}: ``MultivariateNormal`` under a data plate, a triangular
    solve with N right-hand sides, made the gradient ~50x slower on CPU (jax 0.10.2)."""
    cholesky = jnp.linalg.cholesky(covariance)
    inverse = solve_triangular(cholesky, jnp.eye(covariance.shape[-1]), lower=True)
    whitened = (data - loc) @ inverse.T
    return dist.Normal(0.0, 1.0).log_prob(whitened).sum() - data.shape[0] * jnp.log(jnp.diag(cholesky)).sum()


def factor_analysis_model(zoo_model: Any, data: jnp.ndarray) -> None:
    """Factor analysis (or PPCA, by ``zoo_model.isotropic``), data (N, D), the factors
    integrated out: x_n ~ Normal(loc, W W^T + diag(noise)^2), W lower-triangular (D, k)
    with a positive diagonal and its strictly-lower entries in row-major order."""
    D, k = zoo_model.dim, zoo_model.num_factors
    rows, cols = np.tril_indices(D, -1, k)
    scale = float(zoo_model.loading_prior_scale)
    loc = numpyro.sample("loc", dist.Normal(0.0, float(zoo_model.loc_prior_scale)).expand([D]).to_event(1))
    diagonal = numpyro.sample("loadings_diagonal", dist.HalfNormal(scale).expand([k]).to_event(1))
    lower = numpyro.sample("loadings_lower", dist.Normal(0.0, scale).expand([len(rows)]).to_event(1))
    noise_prior = dist.LogNormal(float(zoo_model.noise_prior_loc), float(zoo_model.noise_prior_scale))
    noise = numpyro.sample("noise", noise_prior if zoo_model.isotropic else noise_prior.expand([D]).to_event(1))
    loadings = jnp.zeros((D, k)).at[rows, cols].set(lower).at[jnp.arange(k), jnp.arange(k)].set(diagonal)
    covariance = loadings @ loadings.T + jnp.diag(jnp.broadcast_to(noise ** 2, (D,)))
    numpyro.factor("obs", _gaussian_log_likelihood(data, loc, covariance))


#: Zoo model name -> NumPyro model ``(zoo_model, data) -> None``.
MODELS: dict[str, Callable[[Any, jnp.ndarray], None]] = {"gmm": gmm_model, "hmm": hmm_model,
                                                       "factor_analysis": factor_analysis_model,
                                                       "ppca": factor_analysis_model}


# --- the benchmark's interface --------------------------------------------------------------
def numpyro_model(model_name: str, zoo_model: ZooModel, data_tensor: torch.Tensor) -> tuple[Callable[..., None], dict]:
    """The NumPyro model of ``zoo_model``'s posterior target with its hyperparameters bound,
    and the kwargs to run it with: ``MCMC(NUTS(model), ...).run(key, **kwargs)``."""
    if model_name not in MODELS:
        raise ValueError(f"no NumPyro version of {model_name!r}; accepted: {', '.join(MODELS)}")
    data = jnp.asarray(zoo_model.validate(data_tensor).numpy())
    return functools.partial(MODELS[model_name], zoo_model), {"data": data}


def _problem(model_name: str) -> tuple[PosteriorTarget, Callable[..., None], dict]:
    """The zoo's posterior target on the benchmark's dataset, and its NumPyro model and kwargs."""
    zoo_model = zoo.get_model(model_name)
    data = load_data(zoo_model, "simulated")  # the sweep's default data
    return zoo_model.target(data, "posterior"), *numpyro_model(model_name, zoo_model, data)


def _check_sites(target: PosteriorTarget, trace: dict, params: dict[str, jnp.ndarray]) -> None:
    """AssertionError unless NumPyro's latent sites are the target's, shapes and supports too."""
    latent = {name: site for name, site in trace.items() if site["type"] == "sample" and not site["is_observed"]}
    assert set(latent) == set(target.continuous_sites), f"sites {sorted(latent)} != {target.continuous_sites}"
    for name, site in latent.items():
        assert site["value"].shape == params[name].shape, f"{name}: shape {site['value'].shape} != {params[name].shape}"
        assert bool(jnp.all(site["fn"].support(site["value"]))), f"{name}: zoo draw outside NumPyro's support"


def check_log_density(model_name: str, num_draws: int = 5, seed: int = 0) -> float:
    """The largest deviation of (NumPyro - zoo) log joint densities from their mean over
    ``num_draws`` prior draws (~1e-9 iff they agree up to a constant); AssertionError above
    :data:`TOLERANCE`, or if the sites' names, shapes or supports differ."""
    target, model, kwargs = _problem(model_name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        draws = {site: prior.sample((num_draws,)) for site, prior in target.priors.items()}
    zoo_values = target.log_density(draws).numpy()
    numpyro_values = []
    for i in range(num_draws):
        params = {site: jnp.asarray(value[i].numpy()) for site, value in draws.items()}
        value, trace = log_density(model, (), kwargs, params)
        _check_sites(target, trace, params)
        numpyro_values.append(float(value))
    difference = np.array(numpyro_values) - zoo_values
    deviation = float(np.abs(difference - difference.mean()).max())
    if not deviation <= TOLERANCE:  # also catches NaN
        raise AssertionError(f"{model_name}: NumPyro - zoo log densities {difference.tolist()} differ by "
                             f"{deviation:.3g} from their mean (tolerance {TOLERANCE:g})")
    return deviation


def run_nuts(model_name: str, num_warmup: int, num_samples: int, seed: int = 0) -> tuple[MCMC, float]:
    """One chain of NumPyro's NUTS on the benchmark's target, and its wall time in seconds
    (compilation included)."""
    _, model, kwargs = _problem(model_name)
    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, num_chains=1, progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), **kwargs)
    jax.block_until_ready(mcmc.get_samples())
    return mcmc, time.perf_counter() - start


def main() -> None:
    """For each model: its unconstrained dimension, the log-density check, and a tiny NUTS."""
    print(f"{'model':<16} {'dim':>4} {'deviation':>10} {'NUTS 50+50 s':>13} {'divergences':>12}")
    for name in MODELS:
        deviation = check_log_density(name)
        mcmc, seconds = run_nuts(name, num_warmup=50, num_samples=50)
        dim = sum(np.size(value) for value in mcmc.last_state.z.values())
        divergences = int(mcmc.get_extra_fields()["diverging"].sum())
        print(f"{name:<16} {dim:>4} {deviation:>10.2e} {seconds:>13.2f} {divergences:>12}")


if __name__ == "__main__":
    main()
