"""Two builds of one reference, compared before the new one replaces the old.

Two independent samplers that agree are worth more than either alone: a gold standard
rebuilt with ChEES is checked against the stored NUTS build (or any earlier build), and the
comparison, with the earlier build's own record, goes into the new provenance. A build that
disagrees is not stored: the disagreement is a finding to explain first.

Each moment's difference is measured in combined Monte Carlo standard errors. A mean's is
``sqrt(se_new² + se_old²)``. An sd's standard error is not stored; for a near-Gaussian
marginal it is about ``sd / sqrt(2 ESS)``, which is ``se / sqrt(2)`` since ``se = sd /
sqrt(ESS)``, so sds are compared on that scale (heavier tails make it an underestimate).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

import zoo.references as stored
from zoo.base import Reference, ZooModel

from inference_comparisons.references.gates import GoldStandardError

__all__ = ["AGREEMENT_Z", "checked_against_the_stored_build", "compare_builds", "with_previous_build"]

#: Combined standard errors two builds' moments and log evidences may differ by.
AGREEMENT_Z = 4.0


def _largest_z(new: Reference, old: Reference, field: str, se_scale: float) -> float:
    largest = 0.0
    for name, moments in new.moments.items():
        if name not in old.moments:
            raise ValueError(f"the two builds have different quantities: {name!r} is only in the new one")
        earlier = old.moments[name]
        combined = se_scale * (moments.se ** 2 + earlier.se ** 2).sqrt()
        difference = (getattr(moments, field) - getattr(earlier, field)).abs()
        z = torch.where(difference == 0, torch.zeros_like(difference), difference / combined)
        largest = max(largest, float(z.max()))
    return largest


def compare_builds(new: Reference, old: Reference) -> dict[str, Any]:
    """The largest difference of a mean and of an sd over every quantity, and the log
    evidences' difference, each in combined standard errors, and whether all are within
    :data:`AGREEMENT_Z`."""
    evidence_se = math.hypot(new.log_evidence_se, old.log_evidence_se)
    evidence_difference = new.log_evidence - old.log_evidence
    agreement = {"mean_z_max": _largest_z(new, old, "mean", 1.0),
                 "sd_z_max": _largest_z(new, old, "sd", 1 / math.sqrt(2)),
                 "log_evidence_difference": evidence_difference,
                 "log_evidence_z": abs(evidence_difference) / evidence_se if evidence_se > 0 else math.inf}
    agreement = {key: round(value, 4) for key, value in agreement.items()}
    return {**agreement, "within_z": AGREEMENT_Z,
            "agree": all(agreement[key] <= AGREEMENT_Z for key in ("mean_z_max", "sd_z_max", "log_evidence_z"))}


def with_previous_build(new: Reference, old: Reference, agreement: dict[str, Any]) -> Reference:
    """``new`` with the earlier build's record and the comparison in its provenance."""
    earlier = old.provenance
    diagnostics = earlier.get("diagnostics", {})
    previous = {"method": earlier.get("method"), "sampler": earlier.get("sampler"),
                "command": earlier.get("command"), "created": earlier.get("created"),
                "log_evidence": old.log_evidence, "log_evidence_se": old.log_evidence_se,
                "diagnostics": {key: diagnostics[key] for key in ("ess_min", "rhat_max", "divergences", "grad_evals",
                                                                  "wall_s") if key in diagnostics},
                "agreement": agreement}
    return replace(new, provenance={**new.provenance, "previous_build": previous})


def checked_against_the_stored_build(model: ZooModel, data: torch.Tensor, target: str, built: Reference,
                                     accept_disagreement: str | None = None) -> Reference:
    """``built`` with the stored build it replaces recorded in its provenance, after checking
    that the two agree; raises :class:`GoldStandardError` where they do not, unless
    ``accept_disagreement`` explains why the new build is the right one (recorded with the
    comparison). Without a stored build of this project's, ``built`` as it is."""
    previous = stored.load(model, target, data, source="zoo")
    if previous is None:
        return built
    agreement = compare_builds(built, previous)
    if not agreement["agree"] and accept_disagreement:
        agreement = {**agreement, "accepted_because": accept_disagreement}
    elif not agreement["agree"]:
        raise GoldStandardError(f"{model.name}/{target}: the new build disagrees with the stored one by more than "
                                f"{agreement['within_z']} combined standard errors ({agreement}); nothing was stored, "
                                f"and the chains are kept: find out which build is wrong before replacing it (then "
                                f"--accept-disagreement EXPLANATION stores it with the explanation)")
    return with_previous_build(built, previous, agreement)
