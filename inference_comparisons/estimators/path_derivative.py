"""The ELBO with the path-derivative gradient ("sticking the landing"; Roeder, Wu & Duvenaud,
NeurIPS 2017).

The reparameterised ELBO gradient of a guide q_φ has two parts: the path derivative, through
the draw z = T_φ(ε), and the score term E[∇_φ log q_φ(z)], which is zero in expectation but
not per draw. Dropping it (evaluating log q with φ held fixed) leaves an unbiased gradient
whose variance vanishes as q approaches the posterior: where the family contains the
posterior, SGD can converge to it instead of wandering in a noise floor. On factor analysis'
latent target (400 Gaussian latents, posterior exactly Gaussian), a full-covariance guide at
1,000 steps of 16 draws reached an ELBO 0.0001 nats from log p(x) and k̂ -0.08 with it,
against -21 nats and k̂ 2.1 with the ordinary gradient (-12.9 and 2.0 with the same step
sizes).

Pyro has no such estimator; :class:`PathDerivativeELBO` is a loss for ``pyro.infer.SVI``:
the same value as ``Trace_ELBO``'s (vectorised over particles), with the guide's densities
recomputed from parameters detached from the graph. It needs guides whose sampled sites
are normals (``AutoNormal``, ``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal``)
and their deterministic ``Delta`` sites; any other distribution is refused.
"""

from __future__ import annotations

from typing import Any, Callable

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.subsample_messenger import _Subsample

from inference_comparisons.estimators.particles import in_particle_plate

__all__ = ["PathDerivativeELBO", "held"]


def held(fn: dist.Distribution) -> dist.Distribution:
    """``fn`` with its parameters detached: the same density, through which no gradient
    reaches them (a ``Delta`` is kept: its value and log density are functions of the draw;
    so is a plate's subsample site, whose density is 0)."""
    if isinstance(fn, dist.Independent):
        return held(fn.base_dist).to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, (dist.Delta, _Subsample)):
        return fn
    if isinstance(fn, dist.Normal):
        return dist.Normal(fn.loc.detach(), fn.scale.detach())
    if isinstance(fn, dist.LowRankMultivariateNormal):
        return dist.LowRankMultivariateNormal(fn.loc.detach(), fn.cov_factor.detach(), fn.cov_diag.detach())
    if isinstance(fn, dist.MultivariateNormal):
        # The factor as stored, not ``scale_tril``, which is expanded to the batch shape:
        # under the particle plate that would be one triangular solve per particle.
        return dist.MultivariateNormal(fn.loc.detach(), scale_tril=fn._unbroadcasted_scale_tril.detach(),
                                       validate_args=False)
    raise ValueError(f"the path-derivative ELBO needs normal guide sites, got {type(fn).__name__}")


class PathDerivativeELBO:
    """Negative ELBO of ``num_particles`` vectorised draws, whose gradient is the path
    derivative alone (module docstring). ``max_plate_nesting`` as for Pyro's ELBOs."""

    def __init__(self, num_particles: int, max_plate_nesting: int) -> None:
        self.num_particles, self.max_plate_nesting = num_particles, max_plate_nesting

    def __call__(self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        dim = -(self.max_plate_nesting + 1)
        guide_trace = poutine.trace(in_particle_plate(guide, self.num_particles, dim)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(in_particle_plate(model, self.num_particles, dim),
                                                   trace=guide_trace)).get_trace(*args, **kwargs)
        log_q = sum(held(site["fn"]).log_prob(site["value"]).sum() * site["scale"]
                    for site in guide_trace.nodes.values() if site["type"] == "sample")
        return -(model_trace.log_prob_sum() - log_q) / self.num_particles
