"""The potential energy HMC and the gold standards move on, and the counter of its calls.

Pyro's own potential re-traces the model on every call (~4 ms a gradient on the 200-point
mixture); the target's plain-torch ``log_density``, in Pyro's unconstrained coordinates, is
~20x cheaper (``make bench``), and the conformance tests check that the two agree.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import pyro
import torch
from pyro.infer.mcmc.util import initialize_model
from torch.distributions import Distribution
from torch.distributions.transforms import Transform

from zoo.base import Target

__all__ = ["CountingPotential", "FlatPotential", "WarpedPotential", "fast_potential", "log_prior_at",
           "unconstraining_transforms"]

Potential = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class CountingPotential:
    """Wraps a potential energy ``-log p(x, theta)`` (a function of a dict of unconstrained
    tensors) and counts its calls; a call whose inputs require grad is about to be
    differentiated, so it counts as a gradient evaluation as well.

    Pyro's NUTS exposes no per-draw step counts, so this is how HMC/NUTS cost is measured:
    every leapfrog step calls the potential once with grad. It is the one counter: the
    kernels that record per-draw statistics read their step counts from it too."""

    def __init__(self, potential_fn: Potential) -> None:
        self.potential_fn = potential_fn
        self.density_evals = 0
        self.grad_evals = 0

    def __call__(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        self.density_evals += 1
        if any(v.requires_grad for v in params.values()):
            self.grad_evals += 1
        return self.potential_fn(params)


def unconstraining_transforms(target: Target) -> tuple[dict[str, torch.Tensor], dict[str, Transform]]:
    """A random initial point in Pyro's unconstrained coordinates (``init_to_uniform``: each
    coordinate uniform in (-2, 2)) and, for each continuous site, the transform from those
    coordinates to the site's support."""
    init, _, transforms, _ = initialize_model(target.collapsed_model, max_plate_nesting=target.max_plate_nesting)
    # `transforms` map constrained -> unconstrained; their inverses constrain.
    return init, {s: transforms[s].inv for s in target.continuous_sites}


def fast_potential(target: Target, constrain: dict[str, Transform]) -> Potential:
    """-log p(x, theta) - log|J| in unconstrained coordinates, from ``target.log_density``."""

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        draws, log_det = {}, 0.0
        for site, transform in constrain.items():
            value = transform(params[site])
            log_det = log_det + transform.log_abs_det_jacobian(params[site], value).sum()
            draws[site] = value.unsqueeze(0)
        return -(target.log_density(draws)[0] + log_det)

    return potential


class FlatPotential:
    """The counted potential of a target as a function of one flat unconstrained vector
    (``counted`` is the same potential over a dict of sites, as Pyro's kernels call it),
    and the same space for a batch of points (S, d): many chains, or many particles."""

    def __init__(self, problem: Target) -> None:
        self.problem = problem
        init, self.constrain = unconstraining_transforms(problem)
        self.shapes = {s: init[s].shape for s in problem.continuous_sites}
        self.counted = CountingPotential(fast_potential(problem, self.constrain))
        self.dim = sum(math.prod(shape) for shape in self.shapes.values())
        #: log p(x, theta) + log|det J| of a batch of flat points, uncounted: eager torch, or
        #: the compiled twin :meth:`compile` checked against it.
        self._batch_log_density = self._eager_batch_log_density

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = flat.split([math.prod(shape) for shape in self.shapes.values()], dim=-1)
        return {s: piece.reshape(flat.shape[:-1] + shape) for (s, shape), piece in zip(self.shapes.items(), pieces)}

    def flatten(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Constrained draws ``(S, *site_shape)`` as flat unconstrained points ``(S, d)``."""
        return torch.cat([self.constrain[s].inv(draws[s]).reshape(len(draws[s]), -1) for s in self.shapes], -1)

    def constrained(self, flat: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each site's value at a batch of flat points ``(S, d)``, and log |det J| ``(S,)`` of
        the map from the flat space to them."""
        pieces = self.unflatten(flat)
        values = {s: transform(pieces[s]) for s, transform in self.constrain.items()}
        log_det = sum(transform.log_abs_det_jacobian(pieces[s], values[s]).reshape(len(flat), -1).sum(-1)
                      for s, transform in self.constrain.items())
        return values, log_det

    def _eager_batch_log_density(self, flat: torch.Tensor) -> torch.Tensor:
        values, log_det = self.constrained(flat)
        return self.problem.log_density(values) + log_det

    def batch_log_density(self, flat: torch.Tensor) -> torch.Tensor:
        """log p(x, theta) + log |det J| at a batch of flat points ``(S, d)``: ``(S,)``, one
        density evaluation each (counted)."""
        self.counted.density_evals += len(flat)
        return self._batch_log_density(flat)

    def compile(self, example: torch.Tensor) -> str | None:
        """Use ``torch.compile`` for the batched density (and, through AOTAutograd, its
        gradient) from now on, for batches of ``example``'s shape: ``None`` if it compiled
        and agrees with eager torch at ``example`` (density and gradient within 1e-9,
        relative to their scale), else why it fell back to eager mode (recorded by the caller).

        It pays only for long runs of one batch shape: compiling took 5-20 s on these CPUs
        (less when torch's on-disk cache has the graph), and then a gradient of 32 draws cost
        2.1-2.4x less than in eager mode on the mixture, HMM and factor-analysis posteriors
        (``python -m benchmarks.bench_compile``, interleaved in one run).
        Other batch shapes, and calls with Pyro's validation on, are compiled anew on first
        use (``dynamic=False``); the lockstep samplers run with it off."""
        try:
            # Compiled as the samplers run it, with Pyro's argument checks off: with them on,
            # their data-dependent branches break the graph (1.4x slower on the HMM).
            with torch.enable_grad(), warnings.catch_warnings(), pyro.validation_enabled(False):
                # The compiler warns of deprecations inside torch itself, which are not ours.
                for category in (DeprecationWarning, FutureWarning):
                    warnings.filterwarnings("ignore", category=category, module=r"torch\.")
                compiled = torch.compile(self._eager_batch_log_density, dynamic=False)
                x, y = example.detach().clone().requires_grad_(True), example.detach().clone().requires_grad_(True)
                eager, fast = self._eager_batch_log_density(x), compiled(y)
                (eager_grad,) = torch.autograd.grad(eager.sum(), x)
                (fast_grad,) = torch.autograd.grad(fast.sum(), y)
            eager, fast = eager.detach(), fast.detach()
        except Exception as error:  # noqa: BLE001 - any compiler failure means eager mode, and says why
            return f"torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        errors = (float((eager - fast).abs().max()) / (1.0 + float(eager.abs().max())),
                  float((eager_grad - fast_grad).abs().max()) / (1.0 + float(eager_grad.abs().max())))
        if not max(errors) <= 1e-9:
            return f"the compiled density differs from eager torch by {max(errors):.3g} (relative)"
        self._batch_log_density = compiled
        return None

    def batch_potential_and_grad(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The potential ``(S,)`` and its gradient ``(S, d)`` at a batch of flat points, in
        one autograd call (the draws' densities are independent, so the gradient of their
        sum is each one's own); S gradient evaluations (counted)."""
        with torch.enable_grad():
            point = flat.detach().requires_grad_(True)
            potential = -self.batch_log_density(point)
            (grad,) = torch.autograd.grad(potential.sum(), point)
        self.counted.grad_evals += len(flat)
        return potential.detach(), grad

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        return self.counted(self.unflatten(flat))


def log_prior_at(space: FlatPotential, priors: dict[str, Distribution], flat: torch.Tensor
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """At a batch of flat points (S, d): each site's value, log p(θ) (S,) under ``priors``,
    and log |det J| (S,) of the map to them: the part of a potential that the tempered and
    the conditional ones share (they differ in the likelihood they add)."""
    values, log_det = space.constrained(flat)
    log_prior = sum(prior.log_prob(values[site]).reshape(len(flat), -1).sum(-1) for site, prior in priors.items())
    return values, log_prior, log_det


class WarpedPotential:
    """A :class:`FlatPotential` seen through a bijection x = T(u) of its flat space, as NeuTra
    (Hoffman et al. 2019) runs HMC in a fitted flow's base space, where the posterior is
    nearly a standard normal: U(u) = U(T(u)) - log|det dT/du|. ``transform`` maps a batch
    (S, d) to (S, d) and gives its log |det| (S,); evaluations are counted on the warped
    space's own counter, one density and one gradient evaluation a point."""

    def __init__(self, space: FlatPotential, transform: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                 ) -> None:
        self.space, self.transform = space, transform
        self.counted, self.dim = space.counted, space.dim

    def constrained(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each site's value at a batch of base points, and log |det J| of the whole map."""
        x, log_det = self.transform(u)
        values, inner = self.space.constrained(x)
        return values, log_det + inner

    def batch_potential_and_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            point = u.detach().requires_grad_(True)
            x, log_det = self.transform(point)
            potential = -(self.space.batch_log_density(x) + log_det)
            (grad,) = torch.autograd.grad(potential.sum(), point)
        self.counted.grad_evals += len(u)
        return potential.detach(), grad
