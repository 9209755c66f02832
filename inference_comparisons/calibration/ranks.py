"""Ranks of simulation-based calibration: the true value among L roughly independent,
equally weighted posterior draws of a method's answer.

How a result's draws become L such draws depends on its kind:

- exact and independent draws (a guide's samples): L of them, chosen at random without
  replacement;
- MCMC: each chain thinned by the ratio of its draws to the ESS (the smallest over the
  quantities of interest, :class:`~inference_comparisons.base.Diagnostics`), then L of the
  thinned draws at random; too small an ESS for L draws is an error, not a silent bias;
- importance sampling: L draws resampled by the normalised weights (repeats are ties).

A rank counts the draws below the true value, and breaks ties at random (a discrete local
equals its truth in many draws): uniform on 0..L when the method is calibrated.
"""

from __future__ import annotations

import math

import torch

from zoo.base import Draws, Target

from inference_comparisons.base import InferenceResult, ResultKind

__all__ = ["SHORT_OF_DRAWS", "CalibrationError", "calibration_quantities", "independent_draws", "ranks_of"]

#: The words that end the message of a result with too few independent draws for a rank
#: (too small an ESS, too few particles): what a larger budget may mend.
SHORT_OF_DRAWS = "draws a rank needs"


class CalibrationError(ValueError):
    """A result that cannot give the independent draws SBC needs (a point estimate, too
    small an ESS)."""


def independent_draws(result: InferenceResult, num_draws: int, generator: torch.Generator) -> Draws:
    """``num_draws`` roughly independent, equally weighted draws from ``result`` (see the
    module docstring)."""
    total = result.num_draws
    if result.kind is ResultKind.IMPORTANCE:
        weights = (result.log_weights - result.log_weights.max()).exp()
        if not torch.isfinite(weights).all() or weights.sum() <= 0:
            raise CalibrationError(f"{result.method}: its importance weights cannot be normalised")
        index = torch.multinomial(weights, num_draws, replacement=True, generator=generator)
    else:
        candidates = torch.arange(total)
        if result.kind is ResultKind.MCMC:
            ess = result.diagnostics.ess_min
            if not math.isfinite(ess) or ess <= 0:
                raise CalibrationError(f"{result.method}: no ESS to thin its chains by")
            per_chain = total // result.num_chains
            step = max(1, math.ceil(total / ess))
            # The last draw of every step-long stretch of a chain: none when a chain is
            # shorter than one step (an ESS below the number of chains).
            kept = torch.arange(step - 1, max(per_chain, step - 1), step)
            candidates = (torch.arange(result.num_chains)[:, None] * per_chain + kept).flatten()
        if len(candidates) < num_draws:
            what = ("a point estimate" if total == 1 else
                    f"{len(candidates)} roughly independent draws (of {total}{_mixing(result)})")
            raise CalibrationError(f"{result.method} at budget {result.budget} gives {what}, fewer than the "
                                   f"{num_draws} {SHORT_OF_DRAWS}; raise the budget or lower num_draws")
        index = candidates[torch.randperm(len(candidates), generator=generator)[:num_draws]]
    return {site: value[index] for site, value in result.draws.items()}


def _mixing(result: InferenceResult) -> str:
    """An MCMC result's ESS and, where defined, R-hat: whether more draws would mend it (a
    small ESS of chains that agree) or not (chains in different modes, R-hat far above 1)."""
    if result.kind is not ResultKind.MCMC:
        return ""
    rhat = result.diagnostics.rhat_max
    return f", ESS {result.diagnostics.ess_min:.0f}" + (f", R-hat {rhat:.2f}" if math.isfinite(rhat) else "")


def calibration_quantities(target: Target, draws: Draws) -> dict[str, torch.Tensor]:
    """The scalar test quantities of each draw, ``(S, n)`` per name: the target's quantities
    of interest, its discrete sites (stacked), and the log likelihood (Modrák et al. 2023:
    sensitive where the parameters' margins are not)."""
    out = {name: value.reshape(value.shape[0], -1).to(torch.float64)
           for name, value in target.quantities(draws).items()}
    if target.discrete_sites:
        out["discrete_locals"] = torch.stack([draws[site].reshape(draws[site].shape[0], -1).to(torch.float64)
                                              for site in target.discrete_sites], 1).flatten(1)
    out["log_likelihood"] = target.pointwise_log_likelihood(draws).sum(-1, keepdim=True)
    return out


def ranks_of(truth: dict[str, torch.Tensor], draws: dict[str, torch.Tensor],
             generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The rank of each true scalar (``(1, n)``) among the draws' (``(L, n)``), ties broken
    uniformly at random: ``(n,)`` integers in 0..L per name."""
    out = {}
    for name, values in draws.items():
        below = (values < truth[name]).sum(0)
        tied = (values == truth[name]).sum(0)
        out[name] = below + (torch.rand(below.shape, generator=generator, dtype=torch.float64)
                             * (tied + 1)).floor().long()
    return out
