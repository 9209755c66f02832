"""ArviZ ``InferenceData`` for every method, saved as netCDF.

``az.from_pyro`` drops the ``log_likelihood`` group for the zoo's models and records only
``diverging``, so :func:`to_inference_data` builds the groups itself from an
:class:`~inference_comparisons.base.InferenceResult` and its :class:`~zoo.base.Target`,
according to the result's ``kind``:

============================  ==========================================================
group                         contents
============================  ==========================================================
``posterior``                 equally weighted draws, dims ``(chain, draw, *site dims)``:
                              MCMC chains; SVI guide draws as one chain; for importance
                              sampling a *systematic resample* of the particles (so that
                              every ArviZ function, which assumes equal weights, is right)
``sample_stats``              MCMC: ``diverging, step_size, n_steps, tree_depth (NUTS),
                              acceptance_rate, lp, energy`` (estimators/sampler_stats.py);
                              importance sampling: ``log_weight`` and ``particle_index`` of
                              the particle each resampled draw copies; any method that fitted
                              a guide: ``loss`` over its own ``svi_step`` dim
``importance_particles``      importance sampling only: the weighted particles themselves
                              with their ``log_weight`` (a uniformly random subset when there
                              are more than ``max_draws``: still a valid weighted sample)
``log_likelihood``            ``target.pointwise_log_likelihood`` of the ``posterior`` draws,
                              one variable named after the observed site (after the common
                              prefix of per-step sites ``obs_0 .. obs_{T-1}``), dims
                              ``(chain, draw, observation_dim)``
``posterior_predictive``      the collapsed model run forward at each ``posterior`` draw, every
                              observed site recorded (per-step sites stacked along
                              ``observation_dim``); if the data match no observed sites, a
                              note in attrs instead
``prior``, ``prior_predictive``  ``num_prior_draws`` draws of the latents from the target's
                              prior (observations hidden) and data simulated from them
``observed_data``             the data, as the collapsed model observes it
============================  ==========================================================

The exact method's ``posterior`` holds independent draws from the exact posterior, so that
its file works with ``az.summary`` and ``az.loo`` like every other.
Root attrs describe the cell (method, target, budget, seed, log evidence, k̂, costs, the
storage caps and which group is which); every value is netCDF-serialisable (booleans become
0/1, ``None``, lists and dicts become JSON strings), so :func:`load_inference_data` returns
what :func:`save_inference_data` wrote.

Dimension names are the target's own (``Target.dims`` for each latent site,
``Target.observation_dim`` for the axis of the observations, ``feature`` for the second
axis of (N, D) data); ``dims`` overrides them per variable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
import xarray as xr

from zoo.base import Target

from inference_comparisons._arviz import arviz
from inference_comparisons.base import InferenceResult, ResultKind
from inference_comparisons.estimators.particles import importance_log_weights, prior_proposal, trace_at_draws
from inference_comparisons.estimators.weights import systematic_resample

if TYPE_CHECKING:  # ArviZ is imported at run time only through _arviz (its import-time notice)
    from arviz import InferenceData

__all__ = ["DEFAULT_MAX_DRAWS", "DEFAULT_NUM_PRIOR_DRAWS", "load_inference_data", "save_inference_data",
           "to_inference_data"]

#: Draws stored per file (all chains together): 1000 draws of a 200-point dataset's log
#: likelihood and posterior predictive are about 3 MB of float64 before compression, and more
#: draws add little to R-hat, ESS or PSIS-LOO for the summaries stored here.
DEFAULT_MAX_DRAWS = 1000
#: Prior draws stored: enough for a prior-vs-posterior picture, cheap to simulate.
DEFAULT_NUM_PRIOR_DRAWS = 500


# --- matching the data to the model's observed sites ------------------------------------
def _observed_sites(model: Callable[[], None]) -> dict[str, dict[str, Any]]:
    """The observed sample sites of a zero-argument model, in execution order (one plain
    trace, which samples the latents: under a forked random state, so the caller's stream is
    untouched)."""
    with torch.random.fork_rng(devices=[]), poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace()
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"]}


#: ``{prefix}_{t}``: one observed site per step of a ``pyro.markov`` loop.
_STEP_SITE = re.compile(r"^(?P<prefix>.+)_(?P<step>\d+)$")


@dataclass(frozen=True)
class _Observations:
    """How the data appear in the collapsed model: the variable name used for them in
    ``observed_data``, ``log_likelihood`` and the predictive groups, their value with the
    observations along axis 0, and the observed ``sites`` that make them up (one site, or one
    per step stacked along axis 0; empty when they cannot be matched to sites, so nothing can
    be simulated)."""

    name: str
    value: torch.Tensor
    sites: tuple[str, ...]


def _observations(model: Callable[[], None], data: torch.Tensor) -> _Observations:
    """The :class:`_Observations` of ``model`` (``data`` as given when its observed sites are
    neither a single site nor one site per step ``{prefix}_0 .. {prefix}_{T-1}``)."""
    observed = _observed_sites(model)
    if len(observed) == 1:
        (name, site), = observed.items()
        return _Observations(name, site["value"].detach(), (name,))
    matches = [_STEP_SITE.match(name) for name in observed]
    if len(observed) > 1 and all(matches):
        prefixes = {m["prefix"] for m in matches}
        steps = [int(m["step"]) for m in matches]
        shapes = {site["value"].shape for site in observed.values()}
        if len(prefixes) == 1 and steps == list(range(len(steps))) and len(shapes) == 1:
            value = torch.stack([site["value"].detach() for site in observed.values()])
            return _Observations(prefixes.pop(), value, tuple(observed))
    return _Observations("obs", torch.as_tensor(data), ())


# --- groups ------------------------------------------------------------------------------
def _to_numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach().cpu()
    return value.numpy() if value.dtype == torch.bool else value.numpy().copy()


def _dataset(variables: Mapping[str, tuple[list[str], np.ndarray]]) -> xr.Dataset:
    """An xarray Dataset with integer coordinates on every dimension."""
    coords: dict[str, np.ndarray] = {}
    for dims, values in variables.values():
        for dim, size in zip(dims, values.shape):
            coords.setdefault(dim, np.arange(size))
    base = {"created_at": datetime.now(timezone.utc).isoformat(), "inference_library": "pyro",
            "inference_library_version": pyro.__version__}
    return xr.Dataset({k: (dims, values) for k, (dims, values) in variables.items()}, coords=coords,
                      attrs=base)


def _draw_group(draws: Mapping[str, torch.Tensor], num_chains: int, site_dims: Mapping[str, list[str]],
                extra: Mapping[str, torch.Tensor] | None = None) -> xr.Dataset:
    """A (chain, draw, ...) dataset from flat (S, ...) draws with chains concatenated."""
    variables = {}
    for name, value in {**draws, **(extra or {})}.items():
        array = _to_numpy(value)
        array = array.reshape((num_chains, array.shape[0] // num_chains) + array.shape[1:])
        dims = ["chain", "draw"] + list(site_dims.get(name, [f"{name}_dim_{i}" for i in range(array.ndim - 2)]))
        variables[name] = (dims, array)
    return _dataset(variables)


def _simulate(model: Callable[[], None], draws: Mapping[str, torch.Tensor], max_plate_nesting: int,
              observations: _Observations) -> dict[str, torch.Tensor]:
    """Observations simulated by the model at each of S draws, ``{name: (S, *observed
    shape)}``, in one vectorised pass: latents conditioned on the draws, observed sites
    un-conditioned; per-step sites are stacked along the observation axis."""
    if not observations.sites:
        raise ValueError("the data do not match the model's observed sites")
    with poutine.block(), torch.no_grad():
        num, trace = trace_at_draws(model, draws, max_plate_nesting, simulate=True)
    shape = tuple(observations.value.shape[1:] if len(observations.sites) > 1 else observations.value.shape)
    simulated = []
    for site in observations.sites:
        value = trace.nodes[site]["value"]
        simulated.append(value.expand((num,) + value.shape[1:]).reshape((num,) + shape))
    value = simulated[0] if len(simulated) == 1 else torch.stack(simulated, 1)
    return {observations.name: value}


def _try_simulate(target: Target, draws: Mapping[str, torch.Tensor], observations: _Observations,
                  attrs: dict[str, Any], group: str) -> dict[str, torch.Tensor] | None:
    """:func:`_simulate`, or ``None`` with the reason in ``attrs[group]`` when the collapsed
    model cannot be run forward in one vectorised pass (a shape or support error, or data
    that match no observed sites)."""
    try:
        return _simulate(target.collapsed_model, draws, target.max_plate_nesting, observations)
    except (RuntimeError, ValueError) as error:
        attrs[group] = f"not stored: {type(error).__name__}: {str(error)[:300]}"
        return None


def _netcdf_value(value: Any) -> str | int | float:
    """An attribute value netCDF can store (and give back unchanged)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return json.dumps(value, default=str)


def _cell_attrs(result: InferenceResult) -> dict[str, Any]:
    return {
        "method": result.method, "target": result.target, "budget": result.budget,
        "budget_unit": result.budget_unit, "seed": result.seed, "num_chains": result.num_chains,
        "method_kind": result.kind.value, "log_evidence": result.log_evidence,
        "log_evidence_se": result.log_evidence_se, "wall_s": result.cost.wall_s,
        "density_evals": result.cost.density_evals, "grad_evals": result.cost.grad_evals,
        **dataclasses.asdict(result.diagnostics),  # khat, ess_min, rhat_max, divergences
    }


class _Posterior(NamedTuple):
    """What a kind of result puts in the InferenceData: the equally weighted draws of the
    ``posterior`` group, in how many chains, its ``sample_stats``, any further groups, and
    attrs describing them."""

    draws: dict[str, torch.Tensor]
    num_chains: int
    sample_stats: dict[str, tuple[list[str], np.ndarray]]
    groups: dict[str, xr.Dataset]
    attrs: dict[str, Any]


def _mcmc_posterior(result: InferenceResult, max_draws: int) -> _Posterior:
    """Each chain thinned by one constant stride to at most ``max_draws`` draws in all."""
    num_chains = result.num_chains
    per_chain = result.num_draws // num_chains
    stride = max(1, math.ceil(per_chain * num_chains / max_draws))
    keep = torch.cat([torch.arange(c * per_chain, (c + 1) * per_chain)[::stride] for c in range(num_chains)])
    kept_per_chain = len(keep) // num_chains
    stats = {name: (["chain", "draw"], _to_numpy(value[keep]).reshape(num_chains, kept_per_chain))
             for name, value in result.sample_stats.items()}
    return _Posterior({k: v[keep] for k, v in result.draws.items()}, num_chains, stats, {},
                      {"posterior_kind": f"{num_chains} MCMC chains, post-warmup, thinned by {stride}",
                       "thinning_stride": stride})


def _importance_posterior(result: InferenceResult, max_draws: int, generator: torch.Generator,
                          site_dims: Mapping[str, list[str]]) -> _Posterior:
    """A systematic resample of the particles (every ArviZ function assumes equal weights),
    and the weighted particles themselves (a uniformly random subset when there are more
    than ``max_draws``: still a valid weighted sample)."""
    assert result.log_weights is not None
    log_weights = result.log_weights.detach().to(torch.float64)
    num_draws = result.num_draws
    size = min(num_draws, max_draws)
    index = systematic_resample(log_weights, size, generator)
    subset = (torch.randperm(num_draws, generator=generator)[:size].sort().values if num_draws > size
              else torch.arange(num_draws))
    particles = _draw_group({k: v[subset] for k, v in result.draws.items()}, 1, site_dims,
                            extra={"log_weight": log_weights[subset]})
    stats = {"log_weight": (["chain", "draw"], _to_numpy(log_weights[index])[None]),
             "particle_index": (["chain", "draw"], _to_numpy(index)[None])}
    return _Posterior({k: v[index] for k, v in result.draws.items()}, 1, stats, {"importance_particles": particles},
                      {"posterior_kind": f"systematic resample ({size} equally weighted draws) of {num_draws} "
                                         "importance particles; the weighted particles are in importance_particles",
                       "num_particles": num_draws, "num_particles_stored": size})


def _independent_posterior(result: InferenceResult, max_draws: int) -> _Posterior:
    """I.i.d. draws: the first ``max_draws`` are a fair subset."""
    source = "the exact posterior" if result.kind is ResultKind.EXACT else "a fitted guide, or resampled"
    return _Posterior({k: v[:max_draws] for k, v in result.draws.items()}, 1, {}, {},
                      {"posterior_kind": f"independent draws ({source}) as one chain"})


def to_inference_data(result: InferenceResult, target: Target, data: torch.Tensor, *,
                      max_draws: int = DEFAULT_MAX_DRAWS, num_prior_draws: int = DEFAULT_NUM_PRIOR_DRAWS,
                      observation_dim: str | None = None,
                      dims: Mapping[str, list[str]] | None = None) -> InferenceData:
    """The ArviZ ``InferenceData`` of one cell (module docstring for the groups).

    Args:
        result: what the method returned on ``target``.
        target: the inference problem (its pointwise log likelihood, prior, sites and dims).
        data: the dataset the target was built on (stored as given if the collapsed model's
            observed sites are neither one site nor one site per step, ``obs_0 .. obs_{T-1}``).
        max_draws: most posterior draws stored, all chains together (MCMC: thinned by a
            constant stride; independent draws: the first ``max_draws``; importance
            sampling: the size of the systematic resample and of the stored particle subset).
        num_prior_draws: draws in the ``prior`` and ``prior_predictive`` groups (0: none).
        observation_dim: the name of the observations' axis, overriding the target's.
        dims: per-variable dimension names (without chain and draw) overriding the target's.

    Extra randomness (resampling, predictive simulation) is seeded from ``result.seed`` and
    leaves the global random state untouched.
    """
    if max_draws < 1:
        raise ValueError(f"max_draws must be a positive integer, got {max_draws!r}")
    attrs = _cell_attrs(result)
    observations = _observations(target.collapsed_model, data)
    obs_name, obs_value = observations.name, observations.value
    observation_dim = observation_dim or target.observation_dim
    obs_dims = [observation_dim] + (["feature"] if obs_value.ndim == 2 else
                                    [f"{obs_name}_dim_{i}" for i in range(1, obs_value.ndim)])
    groups: dict[str, xr.Dataset] = {"observed_data": _dataset({obs_name: (obs_dims, _to_numpy(obs_value))})}
    attrs.update(observed_site=obs_name, observation_dim=observation_dim, observed_sites=(
        ", ".join(observations.sites) if len(observations.sites) < 3 else
        f"{observations.sites[0]} .. {observations.sites[-1]} (stacked along {observation_dim})"
        if observations.sites else "none matched: data as given"))
    site_dims = {site: list(target.dims[site]) for site in result.draws}
    site_dims[obs_name] = obs_dims  # the predictive groups: (chain, draw) + the observed dims
    site_dims.update({name: list(names) for name, names in (dims or {}).items()})
    generator = torch.Generator().manual_seed(result.seed)
    result = dataclasses.replace(result, draws={k: v.detach() for k, v in result.draws.items()})
    if result.kind is ResultKind.MCMC:
        posterior = _mcmc_posterior(result, max_draws)
    elif result.kind is ResultKind.IMPORTANCE:
        posterior = _importance_posterior(result, max_draws, generator, site_dims)
    else:  # independent draws: of a fitted guide, or from the exact posterior
        posterior = _independent_posterior(result, max_draws)
    draws, num_chains, sample_stats = posterior.draws, posterior.num_chains, dict(posterior.sample_stats)
    if result.losses:
        sample_stats["loss"] = (["svi_step"], np.asarray(result.losses, dtype=np.float64))
    groups.update(posterior.groups)
    attrs.update(posterior.attrs, num_draws_stored=int(next(iter(draws.values())).shape[0]), max_draws=max_draws)
    groups["posterior"] = _draw_group(draws, num_chains, site_dims)
    if sample_stats:
        groups["sample_stats"] = _dataset(sample_stats)
    log_likelihood = target.pointwise_log_likelihood(draws).detach().to(torch.float64)
    groups["log_likelihood"] = _draw_group({obs_name: log_likelihood}, num_chains, {obs_name: [observation_dim]})
    groups.update(_simulated_groups(target, draws, num_chains, observations, site_dims, num_prior_draws,
                                    result.seed, attrs))
    attrs["groups"] = ", ".join(groups)
    return _inference_data(groups, attrs)


def _simulated_groups(target: Target, draws: Mapping[str, torch.Tensor], num_chains: int,
                      observations: _Observations, site_dims: Mapping[str, list[str]], num_prior_draws: int,
                      seed: int, attrs: dict[str, Any]) -> dict[str, xr.Dataset]:
    """``posterior_predictive``, ``prior`` and ``prior_predictive``, under a forked random
    state seeded by ``seed``; a group that cannot be simulated gets a note in ``attrs``."""
    groups = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictive = _try_simulate(target, draws, observations, attrs, "posterior_predictive")
        if predictive is not None:
            groups["posterior_predictive"] = _draw_group(predictive, num_chains, site_dims)
        if num_prior_draws > 0:
            _, prior = importance_log_weights(target.collapsed_model, prior_proposal(target.collapsed_model),
                                              num_prior_draws, target.max_plate_nesting, target.latent_sites)
            groups["prior"] = _draw_group(prior, 1, site_dims)
            simulated = _try_simulate(target, prior, observations, attrs, "prior_predictive")
            if simulated is not None:
                groups["prior_predictive"] = _draw_group(simulated, 1, site_dims)
    attrs["num_prior_draws"] = num_prior_draws
    return groups


def _inference_data(groups: Mapping[str, xr.Dataset], attrs: Mapping[str, Any]) -> InferenceData:
    """Every attr netCDF-serialisable (module docstring)."""
    return arviz().InferenceData(attrs={k: _netcdf_value(v) for k, v in attrs.items()}, **groups)


# --- storage -----------------------------------------------------------------------------
def save_inference_data(idata: InferenceData, path: Path | str) -> Path:
    """Write ``idata`` to ``path`` (netCDF4 via h5netcdf; parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(str(path), engine="h5netcdf")
    return path


def load_inference_data(path: Path | str) -> InferenceData:
    """Read an InferenceData written by :func:`save_inference_data`, fully into memory (the
    file is closed on return). A missing or unreadable file raises ``ValueError`` naming it."""
    az = arviz()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no InferenceData file at {path}")
    try:
        with az.rc_context({"data.load": "eager"}):
            idata = az.from_netcdf(str(path), engine="h5netcdf")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"cannot read InferenceData from {path}: {type(error).__name__}: {error}") from error
    if not idata.groups():
        raise ValueError(f"cannot read InferenceData from {path}: the file holds no groups")
    return idata
