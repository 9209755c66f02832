"""The values the zoo hands out: a simulation with the values that generated it, and a
reference answer with the moments of its quantities of interest. Below both the model
contract (``zoo.base``) and the stored references (``zoo.references``), which both use them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

__all__ = ["Moments", "Reference", "Simulation"]


class Moments(NamedTuple):
    """Posterior mean and standard deviation of one quantity of interest.

    ``se`` is the Monte Carlo standard error of ``mean`` (zeros when exact).
    """

    mean: torch.Tensor
    sd: torch.Tensor
    se: torch.Tensor


@dataclass(frozen=True)
class Simulation:
    """Data drawn from a model, with the values that generated it."""

    data: torch.Tensor
    true_params: dict[str, torch.Tensor]
    true_latents: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Reference:
    """The answer an inference method is scored against.

    ``log_evidence_se`` is 0 and ``exact`` is True when the answer is exact; otherwise the
    numbers are a gold standard whose making is recorded in ``provenance``.
    """

    log_evidence: float
    log_evidence_se: float
    exact: bool
    moments: dict[str, Moments]
    local_marginals: dict[str, torch.Tensor]
    provenance: dict[str, Any]
