"""A toy target for the tests of samplers and reference builders: a posterior over one
unconstrained site ``theta`` of shape (2,), with a known density."""

from __future__ import annotations

from typing import Callable

import pyro
import pyro.distributions as dist
import torch

from zoo.base import Draws, Target


class ThetaTarget(Target):
    """p(theta | x) proportional to ``prior(theta) exp(log_likelihood(theta))`` (a zero
    log likelihood by default: the prior is the posterior)."""

    name = "posterior"
    latent_sites = ("theta",)
    max_plate_nesting = 0
    dims = {"theta": ("coordinate",)}

    def __init__(self, prior: dist.Distribution,
                 log_likelihood: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.prior = prior
        self._log_likelihood = log_likelihood or (lambda theta: torch.zeros(theta.shape[:-1], dtype=theta.dtype))

    def model(self) -> None:
        theta = pyro.sample("theta", self.prior)
        pyro.factor("likelihood", self._log_likelihood(theta))

    def quantities(self, draws: Draws) -> Draws:
        return {"theta": draws["theta"]}

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        return self._log_likelihood(draws["theta"]).unsqueeze(-1)

    def log_density(self, draws: Draws) -> torch.Tensor:
        return self.prior.log_prob(draws["theta"]) + self._log_likelihood(draws["theta"])
