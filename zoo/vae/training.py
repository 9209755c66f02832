"""Training the VAE's networks, and the checkpoints that fix them.

Training (:func:`train`) is SVI with ``Trace_ELBO`` or a per-datapoint IWAE objective
computed here and scaled by N / batch size (``RenyiELBO(alpha=0)`` is not used: with
subsampling it is not the per-datapoint IWAE). With ``beta`` the ELBO is the beta-VAE's
(Higgins et al. 2017), E_q[log p(x | z)] - beta KL(q(z | x) || p(z)): the z site's log
densities in the model and the guide are both scaled by beta (``poutine.scale``), which
scales exactly the KL term's two halves. It is seeded, and the trained state dicts are
stored in ``zoo/checkpoints/vae-<dataset>.pt`` (``vae-<dataset>-beta<beta>.pt`` for beta
other than 1; ``python -m zoo.vae_tools train --dataset <dataset> [--beta B]``) with the
command that made them, so the decoder every test and sweep uses is one fixed,
reproducible function. The generative model is the same for every beta (z ~ N(0, I),
x ~ p(x | z)); beta changes only which decoder and encoder training finds.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import time
from pathlib import Path
from typing import Any, Callable

import math

import pyro
import pyro.distributions as dist
import pyro.optim
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO

from zoo.numerics import log_mean_exp
from zoo.vae.data import training_data
from zoo.vae.networks import Decoder, Encoder, check_dataset, log_weights

__all__ = ["CHECKPOINT_DIRECTORY", "beta_elbo_program", "check_beta", "checkpoint_path", "load_checkpoint", "save_checkpoint", "train",
           "weights_digest"]

CHECKPOINT_DIRECTORY = Path(__file__).resolve().parent.parent / "checkpoints"


def check_beta(beta: Any) -> float:
    """``beta`` as a float, or ``ValueError`` unless it is a finite positive number."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"vae: beta must be a positive number (1 is the plain VAE), got {beta!r}")
    return float(beta)


def train(dataset: str = "curve", *, objective: str = "elbo", beta: float = 1.0, num_particles: int = 8,
          num_steps: int | None = None, seed: int = 0, progress: bool = True
          ) -> tuple[Encoder, Decoder, dict[str, Any]]:
    """Train encoder and decoder by SVI on :func:`training_data` (float32, one thread).

    ``objective`` "elbo" is Pyro's ``Trace_ELBO`` on minibatches (the subsampled plate
    scales by N / batch size), with the KL term weighted by ``beta`` (module docstring);
    "iwae" is the per-datapoint IWAE bound with ``num_particles`` particles, computed here
    and scaled by N / batch size (beta 1 only). Returns the networks and a record of the
    run (losses every 100 steps, wall time).
    """
    spec = check_dataset(dataset)
    beta = check_beta(beta)
    if objective not in ("elbo", "iwae"):
        raise ValueError(f"vae: objective must be 'elbo' or 'iwae', got {objective!r}")
    if objective == "iwae" and beta != 1:
        raise ValueError(f"vae: beta weights the ELBO's KL term; the IWAE objective has none (got beta={beta})")
    num_steps = spec.num_steps if num_steps is None else num_steps
    data = training_data(dataset).to(torch.float32)
    num = len(data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    encoder, decoder = Encoder(spec), Decoder(spec)

    model, guide = beta_elbo_program(encoder, decoder, num, beta)

    def iwae_loss(model_fn, guide_fn, batch: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        pyro.module("decoder", decoder)
        pyro.module("encoder", encoder)
        loc, scale = encoder(batch)
        weights, _ = log_weights(decoder, batch, dist.Normal(loc, scale).to_event(1), num_particles,
                                 reparameterised=True)
        bound, _ = log_mean_exp(weights)
        return -bound.sum() * (num / len(batch))

    loss = Trace_ELBO() if objective == "elbo" else iwae_loss
    svi = SVI(model, guide, pyro.optim.Adam({"lr": spec.learning_rate}), loss)
    generator = torch.Generator().manual_seed(seed)
    losses, start = [], time.perf_counter()
    from rich.progress import Progress  # local import: only training shows progress

    try:
        with Progress(disable=not progress, transient=False) as bar:
            task = bar.add_task(f"training vae/{dataset} ({objective})", total=num_steps)
            running = float("nan")
            for step in range(num_steps):
                index = torch.randint(num, (spec.batch_size,), generator=generator)
                value = float(svi.step(data[index], index)) / num
                running = value if step == 0 else 0.98 * running + 0.02 * value
                if step % 100 == 0 or step == num_steps - 1:
                    losses.append(running)
                    bar.update(task, completed=step + 1, description=f"vae/{dataset} loss/point {running:.3f}")
    finally:
        torch.set_num_threads(threads)
    record = {"dataset": dataset, "objective": objective, "beta": beta, "num_particles": num_particles,
              "num_steps": num_steps,
              "seed": seed, "batch_size": spec.batch_size, "learning_rate": spec.learning_rate,
              "losses_every_100_steps": losses, "train_seconds": round(time.perf_counter() - start, 1),
              "versions": {"torch": str(torch.__version__), "pyro": str(pyro.__version__), "python": platform.python_version()}}
    pyro.clear_param_store()
    return encoder, decoder, record


def beta_elbo_program(encoder: Encoder, decoder: Decoder, num_datapoints: int, beta: float = 1.0
                      ) -> tuple[Callable[[torch.Tensor, torch.Tensor], None], Callable[[torch.Tensor, torch.Tensor], None]]:
    """The (model, guide) pair whose ``Trace_ELBO`` is the beta-ELBO of a minibatch ``batch``
    with positions ``index`` among ``num_datapoints``: the z site's log densities in both are
    scaled by ``beta`` (module docstring), the likelihood's not."""
    def model(batch: torch.Tensor, index: torch.Tensor) -> None:
        pyro.module("decoder", decoder)
        with pyro.plate("data", num_datapoints, subsample=index):
            with poutine.scale(scale=beta):  # log p(z): one half of the KL term
                prior = dist.Normal(torch.zeros(len(batch), encoder.latent_dim, dtype=batch.dtype), 1.0)
                z = pyro.sample("z", prior.to_event(1))
            pyro.sample("obs", decoder.distribution(z), obs=batch)

    def guide(batch: torch.Tensor, index: torch.Tensor) -> None:
        pyro.module("encoder", encoder)
        with pyro.plate("data", num_datapoints, subsample=index), poutine.scale(scale=beta):  # log q(z | x): the other half
            loc, scale = encoder(batch)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide


def checkpoint_path(dataset: str, beta: float = 1.0) -> Path:
    """The shipped checkpoint of ``dataset`` trained with ``beta``."""
    return CHECKPOINT_DIRECTORY / (f"vae-{dataset}.pt" if beta == 1 else f"vae-{dataset}-beta{beta:g}.pt")


def save_checkpoint(encoder: Encoder, decoder: Decoder, record: dict[str, Any], path: Path, command: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder": encoder.state_dict(), "decoder": decoder.state_dict(),
                "record": dict(record, command=command)}, path)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> tuple[Encoder, Decoder, dict[str, Any]]:
    payload = torch.load(path, weights_only=True)
    spec = check_dataset(payload["record"]["dataset"])
    encoder, decoder = Encoder(spec), Decoder(spec)
    encoder.load_state_dict(payload["encoder"])
    decoder.load_state_dict(payload["decoder"])
    # Stored in float32, evaluated in float64 (references are float64: ARCHITECTURE.md §7); fixed.
    for network in (encoder, decoder):
        network.to(torch.float64).requires_grad_(False).eval()
    return encoder, decoder, payload["record"]


def weights_digest(dataset: str, path: str | Path | None, beta: float = 1.0) -> str:
    """A short digest of the float32 weights as stored (independent of file metadata)."""
    path = Path(path) if path is not None else checkpoint_path(dataset, beta)
    load_checkpoint(dataset, path, beta)  # a clear error if missing or trained otherwise
    return _digest(str(path.resolve()), path.stat().st_mtime)


@functools.lru_cache(maxsize=8)
def _digest(path: str, mtime: float) -> str:
    payload = torch.load(path, weights_only=True)
    digest = hashlib.sha256()
    for part in ("encoder", "decoder"):
        for name, value in sorted(payload[part].items()):
            digest.update(name.encode() + value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_checkpoint(dataset: str, path: str | Path | None = None, beta: float = 1.0
                    ) -> tuple[Encoder, Decoder, dict[str, Any]]:
    """The trained (encoder, decoder, record) of ``dataset`` with ``beta``: fixed float64
    networks. A checkpoint trained on other data or with another beta is refused (its
    decoder is another model, and a reference built for one must never score the other)."""
    check_dataset(dataset)
    beta = check_beta(beta)
    path = Path(path) if path is not None else checkpoint_path(dataset, beta)
    if not path.exists():
        command = f"python -m zoo.vae_tools train --dataset {dataset}" + ("" if beta == 1 else f" --beta {beta:g}")
        raise LookupError(f"vae: no checkpoint at {path}; train one with `{command}`")
    encoder, decoder, record = _load(str(path.resolve()), path.stat().st_mtime)
    if record["dataset"] != dataset:
        raise ValueError(f"vae: checkpoint {path} was trained on {record['dataset']!r}, not {dataset!r}")
    if record.get("beta", 1.0) != beta:  # checkpoints from before beta existed are beta 1
        raise ValueError(f"vae: checkpoint {path} was trained with beta={record.get('beta', 1.0):g}, and this model "
                         f"has beta={beta:g}; use VAE(dataset={dataset!r}, beta={record.get('beta', 1.0):g}) or its "
                         f"own checkpoint")
    return encoder, decoder, record

