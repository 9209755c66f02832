"""The VAE's data: draws from the known curve and swiss-roll decoders, and the binarised
digits with their fixed train/test split."""

from __future__ import annotations

import functools
import math

import torch

from zoo.base import Simulation
from zoo.vae.networks import SPECS, check_dataset

__all__ = ["GROUND_TRUTH_NOISE", "HELD_OUT_SEED", "TRAIN_SEED", "digits_split", "ground_truth", "training_data"]

_F64 = torch.float64
#: Seeds of the known-decoder training and held-out draws, and of the digits split.
TRAIN_SEED, HELD_OUT_SEED = 1, 2
#: Observation noise sd of the known curve / swiss-roll decoders ("small Gaussian noise").
GROUND_TRUTH_NOISE = 0.05


def ground_truth(dataset: str, num_datapoints: int, seed: int) -> Simulation:
    """Draws from the *known* decoder of ``curve`` or ``swiss_roll`` with their true latents
    (float64); :mod:`zoo.vae.model`'s docstring states the two maps."""
    spec = check_dataset(dataset)
    if spec.likelihood != "gaussian":
        raise ValueError(f"vae: ground_truth needs a simulated dataset (curve, swiss_roll), got {dataset!r}")
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num_datapoints, spec.latent_dim, generator=generator, dtype=_F64)
    if dataset == "curve":
        clean = torch.stack([z[:, 0] + 0.3 * z[:, 0] ** 2, torch.sin(2 * z[:, 0])], dim=-1)
    else:
        normal = torch.distributions.Normal(torch.zeros((), dtype=_F64), 1.0)
        t = 1.5 * math.pi * (1 + 2 * normal.cdf(z[:, 0]))
        clean = torch.stack([t * torch.cos(t) / 5, z[:, 1], t * torch.sin(t) / 5], dim=-1)
    noise = GROUND_TRUTH_NOISE * torch.randn(clean.shape, generator=generator, dtype=_F64)
    return Simulation(data=clean + noise, true_params={}, true_latents={"z": z})


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # local import: only the digits need scikit-learn

    digits = load_digits()
    images = torch.as_tensor(digits.data / 16.0 > 0.5, dtype=_F64)
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(TRAIN_SEED))
    return images[order], labels[order]


def digits_split(part: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Binarised digits (N, 64) and their labels; ``part`` "train" (1500) or "test" (297),
    a fixed seeded split."""
    images, labels = _digits()
    cut = SPECS["digits"].num_train
    if part == "train":
        return images[:cut], labels[:cut]
    if part == "test":
        return images[cut:], labels[cut:]
    raise ValueError(f"vae: digits part must be 'train' or 'test', got {part!r}")


def training_data(dataset: str) -> torch.Tensor:
    """The data a checkpoint is trained on (float64)."""
    spec = check_dataset(dataset)
    if dataset == "digits":
        return digits_split("train")[0]
    return ground_truth(dataset, spec.num_train, TRAIN_SEED).data
