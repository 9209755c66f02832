"""Guides built on a target's amortised guide q(z_n | x_n): read its per-site distributions
once, then place new per-datapoint distributions in the same plates (the semi-amortised
guide, the defensive importance-sampling proposal)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from zoo.base import Target

__all__ = ["AmortisedSite", "amortised_sites", "plated_guide", "plates"]

Frames = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class AmortisedSite:
    """One latent site of an amortised guide: its distribution as the guide samples it, the
    location and scale of the distribution under its ``Independent`` wrappers, its event
    dimension, and the (name, size, dim) of its plates."""

    distribution: dist.Distribution
    loc: torch.Tensor
    scale: torch.Tensor
    event_dim: int
    frames: Frames


def amortised_sites(target: Target) -> dict[str, AmortisedSite]:
    """Each latent site of ``target``'s amortised guide, from one trace of it."""
    with torch.no_grad():
        trace = poutine.trace(target.amortised_guide).get_trace()
    out = {}
    for name in target.latent_sites:
        site = trace.nodes[name]
        base = site["fn"]
        while isinstance(base, dist.Independent):
            base = base.base_dist
        out[name] = AmortisedSite(site["fn"], base.mean.detach(), base.stddev.detach(), site["fn"].event_dim,
                                  tuple((f.name, f.size, f.dim) for f in site["cond_indep_stack"]))
    return out


@contextlib.contextmanager
def plates(frames: Frames) -> Iterator[None]:
    """Enter the plates ``frames`` (a site's own plates, as the model has them)."""
    with contextlib.ExitStack() as stack:
        for name, size, dim in frames:
            stack.enter_context(pyro.plate(name, size, dim=dim))
        yield


def plated_guide(proposals: Mapping[str, tuple[Frames, dist.Distribution]]) -> Callable[[], None]:
    """A guide sampling each site from its distribution inside its plates."""
    def guide() -> None:
        for name, (frames, proposal) in proposals.items():
            with plates(frames):
                pyro.sample(name, proposal)

    return guide
