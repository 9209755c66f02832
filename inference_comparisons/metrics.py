"""Exactness scores: pure functions of a result and a reference (ARCHITECTURE.md §6 defines
each column)."""

from __future__ import annotations

import torch

from zoo.base import Reference

from inference_comparisons.base import InferenceResult
from inference_comparisons.schema import METRIC_COLUMNS

__all__ = ["METRIC_COLUMNS", "score"]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1).to(torch.float64)


def score(result: InferenceResult, reference: Reference) -> dict[str, float | bool]:
    """The exactness columns of ``result`` against ``reference`` (:data:`METRIC_COLUMNS`).

    Columns a method cannot fill (MCMC gives no evidence; the ``latent`` GMM target has no
    continuous quantities) are NaN. ``mean_error_ref_se`` is the reference's own standard
    error in the units of ``mean_error``: an error below it is within reference error.
    """
    nan = float("nan")
    row: dict[str, float | bool] = {
        "log_evidence": result.log_evidence,
        "log_evidence_se": result.log_evidence_se,
        "log_evidence_ref": reference.log_evidence,
        "log_evidence_ref_se": reference.log_evidence_se,
        "log_evidence_error": result.log_evidence - reference.log_evidence,
        "reference_exact": reference.exact,
    }
    mean_errors, sd_errors, ref_se = [], [], []
    for name, ref in reference.moments.items():
        if name not in result.moments:
            continue
        est = result.moments[name]
        ref_sd = _flat(ref.sd).clamp_min(1e-300)
        mean_errors.append(((_flat(est.mean) - _flat(ref.mean)).abs() / ref_sd).max().item())
        sd_errors.append((_flat(est.sd).clamp_min(1e-300) / ref_sd).log().abs().max().item())
        ref_se.append((_flat(ref.se) / ref_sd).max().item())
    row["mean_error"] = max(mean_errors) if mean_errors else nan
    row["sd_error"] = max(sd_errors) if sd_errors else nan
    row["mean_error_ref_se"] = max(ref_se) if ref_se else nan
    tvs = [0.5 * (result.local_marginals[name] - ref).abs().sum(-1).mean().item()
           for name, ref in reference.local_marginals.items() if name in result.local_marginals]
    row["local_tv"] = sum(tvs) / len(tvs) if tvs else nan
    for key in ("khat", "ess_min", "rhat_max", "divergences"):
        row[key] = float(getattr(result.diagnostics, key))
    return row
