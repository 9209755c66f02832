"""Bounds on the VAE's log evidence and the inference-gap decomposition (Cremer, Li &
Duvenaud 2018): log p(x) - ELBO(encoder) = approximation gap + amortisation gap.

References: Burda, Grosse & Salakhutdinov (2016) ICLR, "Importance weighted
autoencoders"; Cremer, Li & Duvenaud (2018) ICML, "Inference suboptimality in variational
autoencoders".
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pyro.distributions as dist
import torch

from zoo.numerics import log_mean_exp
from zoo.vae.model import VAE

__all__ = ["InferenceGaps", "best_gaussian", "inference_gaps", "iwae_bound"]

_F64 = torch.float64


def iwae_bound(model: VAE, data: Any, num_particles: int, num_replicates: int = 1) -> torch.Tensor:
    """The per-datapoint IWAE bound log (1/K) sum_k w_nk with the encoder as proposal, (N,):
    one draw of the random bound, or the mean of ``num_replicates`` independent draws (an
    unbiased estimate of its expectation, which increases with K: Burda et al. 2016)."""
    log_weights = model.log_weights(data, num_particles * num_replicates)
    bounds, _ = log_mean_exp(log_weights.reshape(num_replicates, num_particles, -1), dim=1)
    return bounds.mean(0)


def best_gaussian(model: VAE, data: Any, *, num_steps: int = 500, num_samples: int = 64,
                  learning_rate: float = 0.02, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-datapoint diagonal Gaussians q_n(z) maximising the ELBO (the encoder's family,
    optimised for each data point separately), started at the encoder's output; returns
    (loc, scale), each (N, d). Adam on a fixed set of ``num_samples`` standard-normal draws
    (sample-average approximation), vectorised over data points."""
    x = model.validate(data)
    encoder, decoder = model.networks()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        loc0, scale0 = encoder(x)
    loc = loc0.clone().requires_grad_(True)
    log_scale = scale0.log().clone().requires_grad_(True)
    noise = torch.randn((num_samples,) + loc0.shape, generator=generator, dtype=_F64)
    optimiser = torch.optim.Adam([loc, log_scale], lr=learning_rate)
    prior = dist.Normal(torch.zeros_like(loc0), 1.0).to_event(1)
    for _ in range(num_steps):
        optimiser.zero_grad()
        z = loc + log_scale.exp() * noise
        entropy = log_scale.sum(-1)  # Gaussian entropy up to a constant
        elbo = (prior.log_prob(z) + decoder.distribution(z).log_prob(x)).mean(0) + entropy
        (-elbo.sum()).backward()
        optimiser.step()
    return loc.detach(), log_scale.detach().exp()


class InferenceGaps(NamedTuple):
    """Averages over data points (nats per data point) with their standard errors (sd over
    data points / sqrt(N), which includes the Monte Carlo noise), and per-datapoint values."""

    log_evidence: float
    elbo_optimal: float
    elbo_amortised: float
    approximation_gap: float
    approximation_gap_se: float
    amortisation_gap: float
    amortisation_gap_se: float
    per_datapoint: dict[str, torch.Tensor]


def inference_gaps(model: VAE, data: Any, *, num_particles: int = 10_000, num_elbo_samples: int = 4_096,
                   num_steps: int = 500, seed: int = 0) -> InferenceGaps:
    """Cremer, Li & Duvenaud (2018): log p(x) - ELBO(encoder) = approximation gap +
    amortisation gap, where the approximation gap is log p(x) - ELBO(best per-datapoint
    Gaussian) and the amortisation gap is ELBO(best) - ELBO(encoder).

    log p(x_n) is estimated by importance sampling with ``num_particles`` draws from the
    defensive mixture built on the encoder (see :meth:`~zoo.vae.model.VAE.log_weights`; the plain encoder
    under-estimates log p(x_n) where it misses part of the posterior); each ELBO with
    ``num_elbo_samples`` fresh draws.
    """
    x = model.validate(data)
    torch.manual_seed(seed)
    encoder, _ = model.networks()
    with torch.no_grad():
        encoded = encoder(x)
    best = best_gaussian(model, x, num_steps=num_steps, seed=seed)
    log_evidence, _ = log_mean_exp(model.log_weights(x, num_particles, defensive=True))
    elbo_amortised = model.log_weights(x, num_elbo_samples, proposal=encoded).mean(0)
    elbo_optimal = model.log_weights(x, num_elbo_samples, proposal=best).mean(0)
    approximation, amortisation = log_evidence - elbo_optimal, elbo_optimal - elbo_amortised
    root = math.sqrt(len(x))

    def se(values: torch.Tensor) -> float:
        return float(values.std() / root) if len(values) > 1 else float("nan")

    return InferenceGaps(
        log_evidence=float(log_evidence.mean()), elbo_optimal=float(elbo_optimal.mean()),
        elbo_amortised=float(elbo_amortised.mean()),
        approximation_gap=float(approximation.mean()), approximation_gap_se=se(approximation),
        amortisation_gap=float(amortisation.mean()), amortisation_gap_se=se(amortisation),
        per_datapoint={"log_evidence": log_evidence, "elbo_optimal": elbo_optimal,
                       "elbo_amortised": elbo_amortised, "approximation_gap": approximation,
                       "amortisation_gap": amortisation},
    )
