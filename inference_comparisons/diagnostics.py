"""ArviZ ``InferenceData`` for every method, saved as netCDF, and the diagnostics built on it.

``az.from_pyro`` drops the ``log_likelihood`` group for the zoo's models and records only
``diverging`` (DESIGN.md §7), so :func:`to_inference_data` builds the groups itself from an
:class:`~inference_comparisons.base.InferenceResult` and its :class:`~zoo.base.Target`:

============================  ==========================================================
group                         contents
============================  ==========================================================
``posterior``                 equally weighted draws, dims ``(chain, draw, *site dims)``:
                              MCMC chains; SVI guide draws as one chain; for importance
                              sampling a *systematic resample* of the particles (so that
                              every ArviZ function, which assumes equal weights, is right)
``sample_stats``              MCMC: ``diverging, step_size, n_steps, tree_depth (NUTS),
                              acceptance_rate, lp, energy`` (see methods/kernel_stats.py);
                              SVI: ``loss`` over its own ``svi_step`` dim; importance
                              sampling: ``log_weight`` and ``particle_index`` of the particle
                              each resampled draw copies
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

The exact method has no draws: its InferenceData holds ``observed_data`` and attrs only.
Root attrs describe the cell (method, target, budget, seed, log evidence, k̂, costs, the
storage caps and which group is which); every value is netCDF-serialisable (booleans become
0/1, ``None``, lists and dicts become JSON strings), so :func:`load_inference_data` returns
what :func:`save_inference_data` wrote.

Dimension names are derived from shapes: an axis as long as the dataset is the
``observation_dim`` (``"time"`` for a sequence, else ``"datapoint"``; or as passed); the
first axis as long as a discrete local's number of categories is named after it
(``component`` for a mixture's ``assignment``, ``state`` for an HMM's states); otherwise an
axis as wide as a row of (N, D) data is ``feature``, as is the observations' own second
axis; anything else is ``{site}_dim_{i}``. ``dims`` overrides any of this per site.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
import xarray as xr

from zoo.base import Target

from inference_comparisons._arviz import arviz
from inference_comparisons.base import InferenceResult
from inference_comparisons.particles import importance_log_weights, prior_proposal, site_shapes

if TYPE_CHECKING:  # ArviZ is imported at run time only through _arviz (its import-time notice)
    from arviz import InferenceData

__all__ = [
    "DEFAULT_MAX_DRAWS",
    "DEFAULT_NUM_PRIOR_DRAWS",
    "diagnose",
    "diagnostics_columns",
    "load_inference_data",
    "save_inference_data",
    "systematic_resample",
    "to_inference_data",
]

#: Draws stored per file (all chains together): 1000 draws of a 200-point dataset's log
#: likelihood and posterior predictive are about 3 MB of float64 before compression, and more
#: draws add little to R-hat, ESS or PSIS-LOO for the summaries stored here.
DEFAULT_MAX_DRAWS = 1000
#: Prior draws stored: enough for a prior-vs-posterior picture, cheap to simulate.
DEFAULT_NUM_PRIOR_DRAWS = 500
#: Plotted panels per variable dimension, so that a per-datapoint latent stays readable
#: (and ArviZ's 40-subplot limit is never reached).
_MAX_PLOTTED_PER_DIM = 4
#: Plotted variables: a target with one latent site per step (an HMM's ``state_t``) has as
#: many variables as time steps, more than ArviZ's subplot limit.
_MAX_PLOTTED_VARIABLES = 8
#: Largest growth of a figure, per side, that tight PNG bounds may bring (see ``_save``).
_MAX_TIGHT_GROWTH = 1.5
#: Names for the categories of known discrete locals; others get ``{site}_category``.
_CATEGORY_DIMS = {"assignment": "component", "state": "state", "states": "state"}
_PARETO_WARNING = r".*[Ss]hape parameter of Pareto.*"
#: A stuck chain, or a discrete latent that takes one value in every draw, has nothing to
#: smooth: ArviZ's density plots warn and draw it as a spike, which is the honest picture.
_SINGLE_VALUE_WARNING = r".*data appears to have a single value.*"
_ONE_CHAIN_WARNING = r".*[Ss]hape validation failed.*"
#: R-hat divides by the mean within-(split-)chain variance. With few draws per split chain
#: and a Metropolis step that rejects (HMC/NUTS repeat the previous draw), some coordinate
#: can be constant within every split chain yet differ between them: ArviZ's tail R-hat
#: divides by zero there and returns inf, the honest value for chains that have not mixed.
_RHAT_DIVIDE_WARNING = r"divide by zero encountered in scalar divide"
#: ArviZ 0.23's matplotlib backend calls ``normalize_kwargs`` in a way matplotlib 3.11
#: deprecates; nothing we can change from here, so this one message is silenced in plots.
_MATPLOTLIB_ALIAS_WARNING = r".*alias_mapping to normalize_kwargs is deprecated.*"


# --- building ----------------------------------------------------------------------------
def systematic_resample(log_weights: torch.Tensor, num_draws: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``num_draws`` equally weighted draws by systematic resampling: one uniform
    offset, then evenly spaced points through the cumulative normalised weights (lower
    variance than multinomial resampling; Douc, Cappé & Moulines 2005)."""
    weights = (log_weights.to(torch.float64) - log_weights.to(torch.float64).logsumexp(0)).exp()
    cumulative = weights.cumsum(0)
    cumulative[-1] = 1.0  # guard the last bin against rounding
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    points = (offset + torch.arange(num_draws, dtype=torch.float64)) / num_draws
    return torch.searchsorted(cumulative, points).clamp_max(len(weights) - 1)


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
    observations along axis 0, the observed ``sites`` that make them up (one site, or one per
    step stacked along axis 0; empty when they cannot be matched to sites, so nothing can be
    simulated), and whether axis 0 is a sequence (per-step sites, or a single joint event
    axis such as a ``DiscreteHMM``'s) rather than conditionally independent data points."""

    name: str
    value: torch.Tensor
    sites: tuple[str, ...]
    sequential: bool


def _observations(model: Callable[[], None], data: torch.Tensor) -> _Observations:
    """The :class:`_Observations` of ``model`` (``data`` as given when its observed sites are
    neither a single site nor one site per step ``{prefix}_0 .. {prefix}_{T-1}``)."""
    observed = _observed_sites(model)
    if len(observed) == 1:
        (name, site), = observed.items()
        value = site["value"].detach()
        # Axis 0 is a plate (batch) axis for i.i.d. data points, an event axis for a sequence.
        sequential = value.ndim > 0 and len(site["fn"].batch_shape) == 0
        return _Observations(name, value, (name,), sequential)
    matches = [_STEP_SITE.match(name) for name in observed]
    if len(observed) > 1 and all(matches):
        prefixes = {m["prefix"] for m in matches}
        steps = [int(m["step"]) for m in matches]
        shapes = {site["value"].shape for site in observed.values()}
        if len(prefixes) == 1 and steps == list(range(len(steps))) and len(shapes) == 1:
            value = torch.stack([site["value"].detach() for site in observed.values()])
            return _Observations(prefixes.pop(), value, tuple(observed), True)
    return _Observations("obs", torch.as_tensor(data), (), torch.as_tensor(data).ndim == 1)


def _category_counts(target: Target, draws: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Number of categories of each discrete local (from the target's local marginals)."""
    if not draws:
        return {}
    marginals = target.local_marginals({k: v[:2] for k, v in draws.items()})
    return {name: int(value.shape[-1]) for name, value in marginals.items()}


def _axis_names(site: str, shape: tuple[int, ...], num_observations: int, observation_dim: str,
                categories: Mapping[str, int], num_features: int | None) -> list[str]:
    """Dimension names of one draw of ``site`` (module docstring for the rules)."""
    names: list[str] = []
    for axis, size in enumerate(shape):
        name = f"{site}_dim_{axis}"
        if size == num_observations and observation_dim not in names:
            name = observation_dim
        else:
            for local, count in categories.items():
                candidate = _CATEGORY_DIMS.get(local, f"{local}_category")
                if size == count and candidate not in names:
                    name = candidate
                    break
            else:
                if size == num_features and "feature" not in names:
                    name = "feature"
        names.append(name)
    return names


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
    num = next(iter(draws.values())).shape[0]
    shapes = site_shapes(model, tuple(draws))
    values = {}
    for site, value in draws.items():
        shape, batch_dims = shapes[site]
        values[site] = value.reshape((num,) + (1,) * (max_plate_nesting - batch_dims) + tuple(shape))

    def forward() -> None:
        with pyro.plate("particles", num, dim=-(max_plate_nesting + 1)):
            poutine.condition(poutine.uncondition(model), values)()

    with poutine.block(), torch.no_grad():
        trace = poutine.trace(forward).get_trace()
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


def _cell_attrs(result: InferenceResult, kind: str) -> dict[str, str | int | float]:
    attrs: dict[str, Any] = {
        "method": result.method, "target": result.target, "budget": result.budget,
        "budget_unit": result.budget_unit, "seed": result.seed, "num_chains": result.num_chains,
        "method_kind": kind, "log_evidence": result.log_evidence, "log_evidence_se": result.log_evidence_se,
        "wall_s": result.cost.wall_s, "density_evals": result.cost.density_evals,
        "grad_evals": result.cost.grad_evals,
    }
    for name, value in result.diagnostics.items():
        attrs[name] = value  # khat, ess_min, rhat_max, divergences
    return {key: _netcdf_value(value) for key, value in attrs.items()}


def to_inference_data(result: InferenceResult, target: Target, data: torch.Tensor, *,
                      max_draws: int = DEFAULT_MAX_DRAWS, num_prior_draws: int = DEFAULT_NUM_PRIOR_DRAWS,
                      observation_dim: str | None = None,
                      dims: Mapping[str, list[str]] | None = None) -> InferenceData:
    """The ArviZ ``InferenceData`` of one cell (module docstring for the groups).

    Args:
        result: what the method returned on ``target``.
        target: the inference problem (its pointwise log likelihood, prior and sites).
        data: the dataset the target was built on (stored as given if the collapsed model's
            observed sites are neither one site nor one site per step, ``obs_0 .. obs_{T-1}``).
        max_draws: most posterior draws stored, all chains together (MCMC: thinned by a
            constant stride; SVI: the first ``max_draws`` i.i.d. guide draws; importance
            sampling: the size of the systematic resample and of the stored particle subset).
        num_prior_draws: draws in the ``prior`` and ``prior_predictive`` groups (0: none).
        observation_dim: name of the axis indexing the observations; by default ``"time"``
            when they form a sequence (one observed site per step, or one site whose
            observation axis is an event axis rather than a plate) and ``"datapoint"`` else.
        dims: per-variable dimension names (without chain and draw) overriding the derived ones.

    Extra randomness (resampling, predictive simulation) is seeded from ``result.seed`` and
    leaves the global random state untouched.
    """
    az = arviz()
    if max_draws < 1:
        raise ValueError(f"max_draws must be a positive integer, got {max_draws!r}")
    draws = {k: v.detach() for k, v in result.draws.items()}
    kind = ("exact" if not draws else "importance" if result.log_weights is not None
            else "mcmc" if result.num_chains > 1 or "sample_stats" in result.extras else "single_chain")
    attrs = _cell_attrs(result, kind)
    observations = _observations(target.collapsed_model, data)
    obs_name, obs_value = observations.name, observations.value
    if observation_dim is None:
        observation_dim = "time" if observations.sequential else "datapoint"
    num_observations = int(obs_value.shape[0])
    obs_dims = [observation_dim] + (["feature"] if obs_value.ndim == 2 else
                                    [f"{obs_name}_dim_{i}" for i in range(1, obs_value.ndim)])
    groups: dict[str, xr.Dataset] = {"observed_data": _dataset({obs_name: (obs_dims, _to_numpy(obs_value))})}
    attrs["observed_site"] = obs_name
    attrs["observed_sites"] = (", ".join(observations.sites) if len(observations.sites) < 3 else
                               f"{observations.sites[0]} .. {observations.sites[-1]} (stacked along "
                               f"{observation_dim})" if observations.sites else "none matched: data as given")
    attrs["observation_dim"] = observation_dim
    if kind == "exact":
        attrs["groups"] = "observed_data only: the exact method gives no draws"
        return az.InferenceData(attrs=attrs, **groups)

    categories = _category_counts(target, draws)
    num_features = int(obs_value.shape[-1]) if obs_value.ndim == 2 else None
    site_dims = {site: _axis_names(site, tuple(value.shape[1:]), num_observations, observation_dim, categories,
                                   num_features)
                 for site, value in draws.items()}
    site_dims[obs_name] = obs_dims  # the predictive groups: (chain, draw) + the observed dims
    site_dims.update({name: list(names) for name, names in (dims or {}).items()})
    generator = torch.Generator().manual_seed(result.seed)
    num_draws = next(iter(draws.values())).shape[0]
    num_chains = 1
    sample_stats: dict[str, tuple[list[str], np.ndarray]] = {}

    if kind == "mcmc":
        num_chains = max(result.num_chains, 1)
        per_chain = num_draws // num_chains
        stride = max(1, math.ceil(per_chain * num_chains / max_draws))
        keep = torch.cat([torch.arange(c * per_chain, (c + 1) * per_chain)[::stride] for c in range(num_chains)])
        draws = {k: v[keep] for k, v in draws.items()}
        stats = {k: v[keep] for k, v in result.extras.get("sample_stats", {}).items()}
        kept_per_chain = len(keep) // num_chains
        for name, value in stats.items():
            sample_stats[name] = (["chain", "draw"], _to_numpy(value).reshape(num_chains, kept_per_chain))
        attrs["posterior_kind"] = f"{num_chains} MCMC chains, post-warmup, thinned by {stride}"
        attrs["thinning_stride"] = stride
    elif kind == "importance":
        assert result.log_weights is not None
        log_weights = result.log_weights.detach().to(torch.float64)
        size = min(num_draws, max_draws)
        index = systematic_resample(log_weights, size, generator)
        subset = (torch.randperm(num_draws, generator=generator)[:size].sort().values if num_draws > size
                  else torch.arange(num_draws))
        groups["importance_particles"] = _draw_group(
            {k: v[subset] for k, v in draws.items()}, 1, site_dims, extra={"log_weight": log_weights[subset]})
        draws = {k: v[index] for k, v in draws.items()}
        sample_stats["log_weight"] = (["chain", "draw"], _to_numpy(log_weights[index])[None])
        sample_stats["particle_index"] = (["chain", "draw"], _to_numpy(index)[None])
        attrs["posterior_kind"] = (f"systematic resample ({size} equally weighted draws) of {num_draws} "
                                   "importance particles; the weighted particles are in importance_particles")
        attrs["num_particles"] = num_draws
        attrs["num_particles_stored"] = size
    else:
        draws = {k: v[:max_draws] for k, v in draws.items()}  # i.i.d. draws: the first ones are a fair subset
        attrs["posterior_kind"] = "independent draws (e.g. of a fitted guide) as one chain"
        losses = result.extras.get("losses")
        if losses is not None:
            sample_stats["loss"] = (["svi_step"], np.asarray(losses, dtype=np.float64))
    attrs["num_draws_stored"] = int(next(iter(draws.values())).shape[0])
    attrs["max_draws"] = max_draws

    groups["posterior"] = _draw_group(draws, num_chains, site_dims)
    if sample_stats:
        groups["sample_stats"] = _dataset(sample_stats)
    log_likelihood = target.pointwise_log_likelihood(draws).detach().to(torch.float64)
    groups["log_likelihood"] = _draw_group({obs_name: log_likelihood}, num_chains,
                                           {obs_name: [observation_dim]})

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(result.seed)
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
    attrs["groups"] = ", ".join(groups)
    return az.InferenceData(attrs=attrs, **groups)


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


# --- diagnostics -------------------------------------------------------------------------
def _loo(idata: InferenceData) -> Any:
    """``az.loo`` with pointwise k̂; its warning about k̂ > 0.7 is what we report, not a fault."""
    az = arviz()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PARETO_WARNING, category=UserWarning)
        return az.loo(idata, pointwise=True)


def diagnostics_columns(idata: InferenceData) -> dict[str, float]:
    """Diagnostic table columns: ``elpd_loo``, ``elpd_loo_se``, ``p_loo``, ``khat_max`` and
    ``num_khat_above_0_7`` (pointwise Pareto k̂ of PSIS-LOO above 0.7: those observations'
    LOO estimates are unreliable), plus ``bfmi_min`` over chains when ``sample_stats`` has
    ``energy``. Columns that cannot be computed (no log likelihood) are NaN."""
    az = arviz()
    nan = float("nan")
    out: dict[str, float] = {"elpd_loo": nan, "elpd_loo_se": nan, "p_loo": nan, "khat_max": nan,
                             "num_khat_above_0_7": nan}
    if "log_likelihood" in idata.groups() and "posterior" in idata.groups():
        loo = _loo(idata)
        khat = np.asarray(loo.pareto_k)
        out.update(elpd_loo=float(loo.elpd_loo), elpd_loo_se=float(loo.se), p_loo=float(loo.p_loo),
                   khat_max=float(np.nanmax(khat)), num_khat_above_0_7=float((khat > 0.7).sum()))
    if "sample_stats" in idata.groups() and "energy" in idata.sample_stats:
        out["bfmi_min"] = float(np.min(az.bfmi(idata)))
    return out


def _plot_var_names(posterior: xr.Dataset) -> list[str]:
    """The first few posterior variables, to keep plots readable."""
    return list(posterior.data_vars)[:_MAX_PLOTTED_VARIABLES]


def _plot_coords(posterior: xr.Dataset) -> dict[str, np.ndarray]:
    """The first few entries of every non-sample dimension, to keep plots readable."""
    return {dim: posterior[dim].values[:_MAX_PLOTTED_PER_DIM] for dim in posterior.dims
            if dim not in ("chain", "draw") and posterior.sizes[dim] > _MAX_PLOTTED_PER_DIM}


def _save(axes: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = np.asarray(axes).ravel()[0].figure
    # Tight bounds trim the margins, but on a panel whose draws take a single value ArviZ
    # places the HDI and point-estimate labels far outside the axes (the y range is a
    # spike's), and "tight" would grow the PNG to ~10^8 pixels to include them: then keep
    # the figure's own bounds, cutting those labels off.
    tight = figure.get_tightbbox(figure.canvas.get_renderer())  # inches
    width, height = figure.get_size_inches()
    bounded = tight.width <= _MAX_TIGHT_GROWTH * width and tight.height <= _MAX_TIGHT_GROWTH * height
    figure.savefig(path, dpi=80, bbox_inches="tight" if bounded else None)
    plt.close(figure)


def diagnose(path: Path, out_dir: Path) -> str:
    """Summarise one saved cell: return (and print) ``az.summary`` as text with the
    :func:`diagnostics_columns`, and write ``trace.png``, ``rank.png``, ``posterior.png``,
    ``khat.png`` and, when energy was recorded, ``energy.png`` to ``out_dir``.

    Only the first few variables, and the first few entries of each dimension, are plotted. R-hat needs two chains: on
    one-chain cells (SVI, importance sampling) the summary holds statistics only and ArviZ's
    shape warning is silenced; so is its warning that a variable takes a single value
    (a stuck chain, a fixed discrete latent), which the plots then show as a spike, and
    NumPy's divide-by-zero warning from the summary's R-hat, which is then inf (chains
    constant within each half yet different from each other: they have not mixed).
    A missing or corrupt file raises ``ValueError`` naming ``path``."""
    az = arviz()
    path, out_dir = Path(path), Path(out_dir)
    idata = load_inference_data(path)
    attrs = dict(idata.attrs)
    header = ", ".join(f"{k}={attrs[k]}" for k in ("method", "target", "budget", "budget_unit", "seed")
                       if k in attrs)
    lines = [f"{path.name}: {header}" if header else path.name]
    if "posterior" not in idata.groups():
        lines.append(f"no posterior draws (groups: {', '.join(idata.groups())}); "
                     f"log_evidence={attrs.get('log_evidence', float('nan'))}")
        text = "\n".join(lines)
        print(text)
        return text
    out_dir.mkdir(parents=True, exist_ok=True)
    coords = _plot_coords(idata.posterior)
    var_names = _plot_var_names(idata.posterior)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_ONE_CHAIN_WARNING, category=UserWarning)
        warnings.filterwarnings("ignore", message=_MATPLOTLIB_ALIAS_WARNING, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=_SINGLE_VALUE_WARNING, category=UserWarning)
        with warnings.catch_warnings():  # only around the summary: R-hat of stuck split chains is inf
            warnings.filterwarnings("ignore", message=_RHAT_DIVIDE_WARNING, category=RuntimeWarning)
            summary = az.summary(idata, kind="all" if idata.posterior.sizes["chain"] > 1 else "stats")
        lines.append(summary.to_string())
        columns = diagnostics_columns(idata)
        lines.append(", ".join(f"{k}={v:.4g}" for k, v in columns.items()))
        # Plots below: a coordinate whose draws are all equal (a tiny-budget chain that never
        # moved) has a zero KDE bandwidth, and ArviZ divides by it; the plot shows a spike.
        with np.errstate(divide="ignore", invalid="ignore"):
            _save(az.plot_trace(idata, var_names=var_names, coords=coords), out_dir / "trace.png")
            # Ranks of float copies: ArviZ interpolates ranks of integer draws with a spline that
            # fails when a discrete latent takes a single value in every draw.
            _save(az.plot_rank(idata.posterior.astype(np.float64), var_names=var_names, coords=coords), out_dir / "rank.png")
            _save(az.plot_posterior(idata, var_names=var_names, coords=coords), out_dir / "posterior.png")
            if "sample_stats" in idata.groups() and "energy" in idata.sample_stats:
                _save(az.plot_energy(idata), out_dir / "energy.png")
            _save(az.plot_khat(_loo(idata)), out_dir / "khat.png")
    text = "\n".join(lines)
    print(text)
    return text
