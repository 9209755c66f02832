"""Diagnostics of a stored cell's InferenceData: the table's diagnostic columns (PSIS-LOO,
E-BFMI) and ``diagnose``'s ArviZ summary and plots."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from inference_comparisons._arviz import arviz
from inference_comparisons.diagnostics.inference_data import load_inference_data

if TYPE_CHECKING:  # ArviZ is imported at run time only through _arviz (its import-time notice)
    from arviz import InferenceData

__all__ = ["diagnose", "diagnostics_columns"]

#: Plotted panels per variable dimension, so that a per-datapoint latent stays readable
#: (and ArviZ's 40-subplot limit is never reached).
_MAX_PLOTTED_PER_DIM = 4
#: Plotted variables: a target with one latent site per step (an HMM's ``state_t``) has as
#: many variables as time steps, more than ArviZ's subplot limit.
_MAX_PLOTTED_VARIABLES = 8
#: Largest growth of a figure, per side, that tight PNG bounds may bring (see ``_save``).
_MAX_TIGHT_GROWTH = 1.5
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
    # PSIS-LOO needs a sample: a point estimate (map's single draw) has none to reweight.
    if ("log_likelihood" in idata.groups() and "posterior" in idata.groups()
            and idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"] > 1):
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
    if idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"] == 1:
        # A point estimate (map): its values; there is no spread to summarise or plot and no
        # sample for PSIS-LOO.
        lines.append("a point estimate (one draw): no summary statistics, plots or PSIS-LOO")
        for name, value in idata.posterior.isel(chain=0, draw=0).data_vars.items():
            lines.append(f"{name} = {np.array2string(value.values, precision=4, threshold=12)}")
        lines.append(", ".join(f"{k}={v:.4g}" for k, v in diagnostics_columns(idata).items()))
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
