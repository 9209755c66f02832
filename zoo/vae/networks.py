"""The VAE's networks and what a dataset fixes about them (:data:`SPECS`), and the
per-datapoint importance weights they define."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["SPECS", "Decoder", "Encoder", "Spec", "check_dataset", "log_weights"]

@dataclass(frozen=True)
class Spec:
    """What a dataset fixes: shapes, likelihood, network sizes and the training recipe.

    Network sizes and step counts were chosen so that training takes about a minute on two
    CPU cores and the checkpoints stay well under 100 KB.
    """

    latent_dim: int
    data_dim: int
    likelihood: str  # "bernoulli" or "gaussian"
    hidden: tuple[int, ...]
    num_steps: int
    batch_size: int
    learning_rate: float
    num_train: int
    num_held_out: int


SPECS: dict[str, Spec] = {
    "curve": Spec(1, 2, "gaussian", (32, 32), 4000, 128, 3e-3, 2000, 200),
    "swiss_roll": Spec(2, 3, "gaussian", (64, 64), 4000, 128, 3e-3, 3000, 200),
    # 1797 digits: 1500 train, 297 held out (a seeded permutation).
    "digits": Spec(2, 64, "bernoulli", (128,), 4000, 100, 3e-3, 1500, 297),
}


def check_dataset(dataset: Any) -> Spec:
    if dataset not in SPECS:
        raise ValueError(f"vae: unknown dataset {dataset!r}; accepted: {', '.join(SPECS)}")
    return SPECS[dataset]


# --- networks ------------------------------------------------------------------------
def _mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())  # smooth: NUTS and the reference samplers need gradients
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """z (..., d) -> Bernoulli logits or Gaussian means (..., D); Gaussian decoders also
    hold one learned log noise sd per output dimension."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.likelihood = spec.likelihood
        self.net = _mlp((spec.latent_dim,) + spec.hidden + (spec.data_dim,))
        if spec.likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.full((spec.data_dim,), -1.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def distribution(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z) with the data dimension as its event."""
        out = self(z)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        return dist.Normal(out, self.log_scale.exp()).to_event(1)


class Encoder(nn.Module):
    """x (..., D) -> (loc, scale) of q(z | x), each (..., d)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.latent_dim = spec.latent_dim
        self.net = _mlp((spec.data_dim,) + spec.hidden + (2 * spec.latent_dim,))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        loc, raw = out[..., :self.latent_dim], out[..., self.latent_dim:]
        return loc, nn.functional.softplus(raw) + 1e-4


def log_weights(decoder: Decoder, data: torch.Tensor, proposal: dist.Distribution, num_particles: int,
                reparameterised: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x_n, z) - log q(z | x_n) for ``num_particles`` draws z ~ q per data point,
    ``(K, N)``, and the draws ``(K, N, d)``, under the standard-normal prior of z.
    ``proposal`` has batch shape ``(N,)`` and event shape ``(d,)``; with ``reparameterised``
    the draws carry gradients (training)."""
    z = proposal.rsample((num_particles,)) if reparameterised else proposal.sample((num_particles,))
    prior = dist.Normal(torch.zeros_like(z), 1.0).to_event(1)
    return prior.log_prob(z) + decoder.distribution(z).log_prob(data) - proposal.log_prob(z), z
