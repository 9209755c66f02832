"""Expectation-maximisation to the posterior mode: what a posterior target provides for it,
and the closed-form conditional maximisations its models share.

EM (Dempster, Laird & Rubin 1977) climbs the log joint log p(x, theta) of the globals, the
locals summed or integrated out. Each step takes the exact posterior of the locals at the
current theta (the E-step: responsibilities, forward-backward, Gaussian conditioning) and
maximises the expected complete-data log joint Q(theta) + log p(theta) over theta (the
M-step). Where the priors make the joint maximisation awkward (a log-normal scale prior
next to a normal mean), the M-step is a cycle of conditional maximisations, one block of
parameters given the others: ECM (Meng & Rubin 1993), which keeps EM's monotone ascent and
its fixed points, the stationary points of log p(x, theta).

The mode is of the density of the natural parameters (weights, means, standard deviations),
without the Jacobian of any change of variables: the point ``map`` (``AutoDelta``) seeks
too, unlike ``laplace``'s mode of the unconstrained density.
"""

from __future__ import annotations

import abc

import torch

from zoo.base import Draws

__all__ = ["EMSteps", "dirichlet_mode", "dirichlet_without_mode", "half_normal_scale_mode", "lognormal_scale_mode",
           "normal_mean_mode"]


class EMSteps(abc.ABC):
    """A posterior target (a mixin) whose model has closed-form EM steps.

    ``params`` are one point: each global site's value with a leading axis of 1, the form
    of a single draw, so that ``log_density(params)`` is the log joint there. EM starts at
    the target's ``data_start()``, which such a target must give (so EM is deterministic).
    """

    def em_not_applicable(self) -> str | None:
        """Why these priors have no mode for EM to find, or ``None``."""
        return None

    @abc.abstractmethod
    def em_step(self, params: Draws) -> Draws:
        """One E-step at ``params`` and one cycle of conditional M-steps: the next point."""


def dirichlet_mode(counts: torch.Tensor, concentration: float) -> torch.Tensor:
    """The mode over the simplex (last axis) of prod_k p_k^counts_k under a symmetric
    Dirichlet(concentration) prior: (counts + concentration - 1), normalised. Needs
    ``concentration >= 1`` (below it the density is unbounded at the simplex's faces)."""
    pseudo = counts + (concentration - 1.0)
    return pseudo / pseudo.sum(-1, keepdim=True)


def dirichlet_without_mode(**concentrations: float) -> str | None:
    """Why a posterior under these symmetric Dirichlet concentrations has no mode (one is
    below 1, where the density is unbounded at the simplex's faces), or ``None``."""
    for key, value in concentrations.items():
        if value < 1:
            return (f"{key}={value} < 1: the posterior density is unbounded where a probability reaches 0, "
                    "so there is no mode for EM to find")
    return None


def normal_mean_mode(weight: torch.Tensor, weighted_sum: torch.Tensor, variance: torch.Tensor,
                     prior_loc: float | torch.Tensor, prior_scale: float) -> torch.Tensor:
    """The mode of a normal mean mu given ``weight`` (expected count) observations of
    variance ``variance`` summing to ``weighted_sum``, under a Normal(prior_loc,
    prior_scale^2) prior: the precision-weighted average of the data and the prior mean."""
    prior_precision = prior_scale ** -2
    return (weighted_sum / variance + prior_loc * prior_precision) / (weight / variance + prior_precision)


def lognormal_scale_mode(count: torch.Tensor, sum_squares: torch.Tensor, prior_loc: float,
                         prior_scale: float, iterations: int = 100) -> torch.Tensor:
    """The mode of a normal standard deviation sigma given ``count`` observations whose
    squared deviations sum to ``sum_squares``, under a LogNormal(prior_loc, prior_scale)
    prior: the maximiser of

        f(u) = -(count + 1) u - sum_squares e^{-2u} / 2 - (u - prior_loc)^2 / (2 prior_scale^2)

    in u = log sigma (the +1 is the log-normal density's 1/sigma). f is strictly concave
    and f' is convex and decreasing, so Newton's method on f' = 0 started left of the root
    climbs to it monotonically, never overshooting (a start right of it could jump so far
    left that e^{-2u} overflows). The start min(prior_loc, log(sum_squares / (count + 1)) / 2)
    is left of it, where each of f''s terms is non-negative but the first; with no sum of
    squares f' is linear and its root is the start. Elementwise."""
    count, sum_squares = torch.broadcast_tensors(count, sum_squares)
    u = torch.where(sum_squares > 0, (0.5 * (sum_squares / (count + 1)).log()).clamp_max(prior_loc),
                    prior_loc - (count + 1) * prior_scale ** 2)
    for _ in range(iterations):
        decay = sum_squares * torch.exp(-2 * u)
        slope = -(count + 1) + decay - (u - prior_loc) / prior_scale ** 2
        step = slope / (2 * decay + prior_scale ** -2)
        u = u + step
        if bool((step.abs() <= 1e-13 * (1 + u.abs())).all()):
            break
    return u.exp()


def half_normal_scale_mode(count: torch.Tensor, sum_squares: torch.Tensor, prior_scale: float) -> torch.Tensor:
    """The mode of a normal standard deviation sigma given ``count`` observations whose
    squared deviations sum to ``sum_squares``, under a HalfNormal(prior_scale) prior: the
    maximiser of

        f(sigma) = -count log sigma - sum_squares / (2 sigma^2) - sigma^2 / (2 prior_scale^2),

    where f' = 0 is a quadratic in v = sigma^2, v^2 / prior_scale^2 + count v - sum_squares = 0.
    Its positive root is written 2 sum_squares / (count + sqrt(count^2 + 4 sum_squares /
    prior_scale^2)), which does not cancel when the prior is weak. Elementwise; with no sum of
    squares the mode is sigma = 0, where the half-normal's own density peaks."""
    count, sum_squares = torch.broadcast_tensors(count, sum_squares)
    root = torch.sqrt(count ** 2 + 4 * sum_squares / prior_scale ** 2)
    return torch.sqrt(2 * sum_squares / (count + root))
