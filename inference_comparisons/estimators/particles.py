"""Vectorised evaluation of Pyro models over many particles in one pass.

Pyro's ``Importance`` loops in Python (~1 ms a particle); here every particle goes through
one model execution under an outer particle plate (rule 2 of the target contract in
``zoo.base``), ~50x faster. Draws are exchanged in the flat layout ``(S, *site_shape)``
used across the harness.

- :func:`importance_log_weights`: log p(x, z) - log q(z) of a whole dataset's latents;
- :func:`per_datapoint_log_weights`: log p(x_n, z_n) - log q(z_n | x_n) of each data point
  (targets whose every latent is local), computed from one pass of model and guide rather
  than with ``RenyiELBO``, which is the per-datapoint IWAE only when nothing is scaled;
- :func:`log_joint`: log p(x, z) at given draws.
"""

from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.importance import vectorized_importance_weights
from pyro.poutine.subsample_messenger import _Subsample

__all__ = ["PAIRS_PER_PASS", "PARTICLE_CHUNK", "importance_log_weights", "in_particle_plate", "log_joint",
           "per_datapoint_log_weights", "prior_proposal", "site_shapes", "trace_at_draws"]

#: Particles per vectorised pass. A pass's (particles x data x components) tensors, 5 MB for
#: a 200-point, 3-component mixture in float64, then stay in cache between the elementwise
#: steps of a density: 1.5x faster than passes of 10^4, whose 50 MB tensors stream from
#: memory at every step, with the per-pass overhead still small (benchmarks/bench_importance.py).
PARTICLE_CHUNK = 1_000
#: Particle x data-point pairs per vectorised pass of per-datapoint weights: bounds memory
#: for wide decoders.
PAIRS_PER_PASS = 20_000


def site_shapes(model: Callable[[], None], sites: tuple[str, ...]) -> dict[str, tuple[torch.Size, int]]:
    """Shape of one draw of each site, and how many of its leading dims are plate dims."""
    with pyro.poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace()
    return {s: (trace.nodes[s]["value"].shape, len(trace.nodes[s]["fn"].batch_shape)) for s in sites}


def prior_proposal(model: Callable[[], None]) -> Callable[[], None]:
    """The model's prior over its latent sites, as a proposal: observed sites hidden."""
    return poutine.block(model, hide_fn=lambda msg: msg.get("is_observed", False))


def _flatten(value: torch.Tensor, num: int, shape: torch.Size) -> torch.Tensor:
    """A site's value under the particle plate, (S, 1.., *shape), as (S, *shape)."""
    return value.expand((num,) + value.shape[1:]).reshape(num, *shape)


def importance_log_weights(model: Callable[[], None], proposal: Callable[[], None], num_particles: int,
                           max_plate_nesting: int, sites: tuple[str, ...],
                           chunk: int = PARTICLE_CHUNK) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """log p(x, z) - log q(z) for ``num_particles`` draws z ~ q, in vectorised passes of
    ``chunk`` particles; returns the ``(S,)`` log weights and the flat draws."""
    shapes = site_shapes(model, sites)
    log_weights, draws = [], {s: [] for s in sites}
    with torch.no_grad():
        for start in range(0, num_particles, chunk):
            num = min(chunk, num_particles - start)
            lw, _, guide_trace = vectorized_importance_weights(
                model, proposal, num_samples=num, max_plate_nesting=max_plate_nesting)
            log_weights.append(lw.reshape(num).detach())
            for s in sites:
                draws[s].append(_flatten(guide_trace.nodes[s]["value"].detach(), num, shapes[s][0]))
    return torch.cat(log_weights), {s: torch.cat(v) for s, v in draws.items()}


def trace_at_draws(model: Callable[[], None], draws: dict[str, torch.Tensor], max_plate_nesting: int, *,
                   simulate: bool = False) -> tuple[int, poutine.Trace]:
    """One trace of ``model`` under a particle plate of S, its latent sites set to the S
    given draws (``(S, *site_shape)`` each); returns S and the trace. With ``simulate`` the
    observed sites are sampled instead of observed (predictive simulation)."""
    shapes = site_shapes(model, tuple(draws))
    num = next(iter(draws.values())).shape[0]
    values = {}
    for s, value in draws.items():
        shape, batch_dims = shapes[s]
        values[s] = value.reshape((num,) + (1,) * (max_plate_nesting - batch_dims) + tuple(shape))

    def conditioned() -> None:
        with pyro.plate("particles", num, dim=-(max_plate_nesting + 1)):
            poutine.condition(poutine.uncondition(model) if simulate else model, values)()

    return num, poutine.trace(conditioned).get_trace()


def log_joint(model: Callable[[], None], draws: dict[str, torch.Tensor], max_plate_nesting: int) -> torch.Tensor:
    """log p(x, z) at each of ``S`` given draws, ``(S,)``, in one conditioned pass."""
    num, trace = trace_at_draws(model, draws, max_plate_nesting)
    total = torch.zeros(num, dtype=torch.float64)
    for site in trace.nodes.values():
        if site["type"] == "sample":
            lp = site["fn"].log_prob(site["value"])
            total = total + lp.reshape(num, -1).sum(-1) if lp.dim() > 0 else total + lp
    return total


def in_particle_plate(fn: Callable[..., Any], num: int, dim: int) -> Callable[..., Any]:
    """``fn`` run under an outer plate of ``num`` particles at ``dim``: one vectorised pass."""
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate("particles", num, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def per_datapoint_log_weights(model: Callable[[], None], proposal: Callable[[], None], num_particles: int,
                              max_plate_nesting: int, sites: tuple[str, ...],
                              pairs_per_pass: int = PAIRS_PER_PASS,
                              keep_draws: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """log p(x_n, z_nk) - log q(z_nk | x_n), ``(K, N)``, and the draws ``(K, *site_shape)``
    (an empty dict with ``keep_draws=False``, which saves memory for large K).

    Raises ``ValueError`` if a sample site is not batched over the data plate (a global
    latent, or a site outside the plate), where per-datapoint weights do not exist.
    """
    dim = -(max_plate_nesting + 1)
    log_weights: list[torch.Tensor] = []
    draws: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    start, chunk = 0, None
    with torch.no_grad():
        while start < num_particles:
            num = min(chunk or 1, num_particles - start)
            guide_trace = poutine.trace(in_particle_plate(proposal, num, dim)).get_trace()
            replayed = poutine.replay(in_particle_plate(model, num, dim), trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace()
            total = None
            for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                for name, site in trace.nodes.items():
                    if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                        continue  # the plates' own subsample sites carry no density
                    lp = site["fn"].log_prob(site["value"])
                    if lp.dim() != 2 or lp.shape[0] != num or (total is not None and lp.shape != total.shape) \
                            or not isinstance(site["scale"], (int, float)) or site["scale"] != 1.0:
                        raise ValueError(f"site {name!r} has log-density shape {tuple(lp.shape)} under {num} particles "
                                         f"(or is scaled): per-datapoint weights need every site inside one unscaled "
                                         f"data plate")
                    total = sign * lp if total is None else total + sign * lp
            assert total is not None
            log_weights.append(total)
            for s in sites if keep_draws else ():
                draws[s].append(guide_trace.nodes[s]["value"].expand((num,) + guide_trace.nodes[s]["value"].shape[1:]))
            start += num
            chunk = max(1, pairs_per_pass // total.shape[1])
    return torch.cat(log_weights), ({s: torch.cat(v) for s, v in draws.items()} if keep_draws else {})
