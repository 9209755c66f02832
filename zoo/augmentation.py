"""Discrete locals drawn by samplers rather than summed out.

:class:`DataAugmentation` is what a posterior target whose discrete locals are summed out
provides so that a sampler can bring them back and alternate (Tanner & Wong 1987; for
mixtures Diebolt & Robert 1994; for HMMs Chib 1996's forward filtering, backward sampling).

The sampler alternates z ~ p(z | theta, x), drawn exactly, and a move of theta that leaves
p(theta | z, x) invariant, for which it needs the complete-data log likelihood
log p(x, z | theta). Comparing it with a sampler of the collapsed density p(theta | x) shows
what summing z out buys.

:class:`TemperedGibbs` is what a latent target whose locals are discrete provides so that
annealing (AIS, SMC) can move them: draws from their prior, and a Gibbs sweep that leaves
the tempered posterior pi_beta(z) ∝ p(z | theta) p(x | z, theta)^beta invariant.
"""

from __future__ import annotations

import abc

import torch

from zoo.base import Draws

__all__ = ["DataAugmentation", "TemperedGibbs"]


class DataAugmentation(abc.ABC):
    """A posterior target (a mixin) whose summed-out locals can be drawn and conditioned on.

    ``draws`` hold S parameter points, each site's value with a leading axis of S; the
    locals are an integer tensor (S, N) of each point's discrete states."""

    @abc.abstractmethod
    def draw_locals(self, draws: Draws) -> torch.Tensor:
        """(S, N) exact draws of the locals from p(z | theta_s, x), one per point, from
        torch's global generator."""

    @abc.abstractmethod
    def complete_log_likelihood(self, draws: Draws, locals_: torch.Tensor) -> torch.Tensor:
        """(S,) log p(x, z_s | theta_s), differentiable in ``draws``."""


class TemperedGibbs(abc.ABC):
    """A latent target (a mixin) whose discrete locals annealing can move. ``draws`` are in
    the target's own site format, S of them; ``beta`` is (S,), one temperature per draw."""

    @abc.abstractmethod
    def prior_locals(self, num_draws: int) -> Draws:
        """``num_draws`` independent draws of the locals from p(z | theta) (beta = 0)."""

    @abc.abstractmethod
    def gibbs_sweep(self, draws: Draws, beta: torch.Tensor) -> Draws:
        """One sweep of a Gibbs sampler leaving pi_beta invariant, from each draw."""
