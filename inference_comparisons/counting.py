"""Counting density and gradient evaluations, the machine-independent half of cost."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["CountingPotential"]


class CountingPotential:
    """Wraps a potential energy ``-log p(x, theta)`` (a function of a dict of unconstrained
    tensors) and counts its calls; a call whose inputs require grad is about to be
    differentiated, so it counts as a gradient evaluation as well.

    Pyro's NUTS exposes no per-draw step counts (DESIGN.md §7), so this is how HMC/NUTS
    cost is measured: every leapfrog step calls the potential once with grad.
    """

    def __init__(self, potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> None:
        self.potential_fn = potential_fn
        self.density_evals = 0
        self.grad_evals = 0

    def __call__(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        self.density_evals += 1
        if any(v.requires_grad for v in params.values()):
            self.grad_evals += 1
        return self.potential_fn(params)
