"""The gates a gold-standard reference must pass to be stored, and the refusal when it does not."""

from __future__ import annotations

__all__ = ["GATES", "GoldStandardError"]

#: posteriordb's acceptance gates for a reference posterior, plus Vehtari et al.'s k̂ bound,
#: plus the largest Laplace mass (relative to the chains' mode) another mode may carry: a mode
#: of relative mass ε at δ posterior sds moves a mean by about εδ, far below the 0.01 sd
#: Monte Carlo error of an ESS of 10,000 when ε < 1e-4.
#: The last gate bounds the fraction of evidence particles whose density could not be
#: computed and were given weight zero (see evidence.log_density_where_computable).
GATES = {"rhat_max": 1.01, "ess_min": 10_000, "divergences": 0, "khat_max": 0.5, "other_mode_mass_max": 1e-4,
         "uncomputable_max": 1e-3}


class GoldStandardError(RuntimeError):
    """A candidate reference failed a gate or could not be built; it is not stored."""
