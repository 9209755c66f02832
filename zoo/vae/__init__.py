"""The variational autoencoder: a nonlinear latent-variable model with an amortised guide.

One job per module:

- :mod:`zoo.vae.model`: the registered model ``vae`` and its ``latent`` target (generative
  process, targets and reference in its docstring);
- :mod:`zoo.vae.networks`: the encoder and decoder, what each dataset fixes about them
  (:data:`SPECS`), and the per-datapoint importance weights they define;
- :mod:`zoo.vae.data`: the known curve and swiss-roll decoders, the digits and their split;
- :mod:`zoo.vae.training`: training and the checkpoints in ``zoo/checkpoints``;
- :mod:`zoo.vae.gaps`: the IWAE bound and the inference-gap decomposition;
- :mod:`zoo.vae.latent`: latent-space plots (traversals, interpolation, prior grid, probes).

``python -m zoo.vae_tools`` is their command line (train, gaps, plots).
"""

from zoo.vae.data import digits_split, ground_truth, training_data
from zoo.vae.gaps import InferenceGaps, best_gaussian, inference_gaps, iwae_bound
from zoo.vae.model import VAE
from zoo.vae.networks import SPECS, Decoder, Encoder, Spec
from zoo.vae.training import CHECKPOINT_DIRECTORY, checkpoint_path, load_checkpoint, save_checkpoint, train

__all__ = [
    "CHECKPOINT_DIRECTORY",
    "SPECS",
    "VAE",
    "Decoder",
    "Encoder",
    "InferenceGaps",
    "Spec",
    "best_gaussian",
    "checkpoint_path",
    "digits_split",
    "ground_truth",
    "inference_gaps",
    "iwae_bound",
    "load_checkpoint",
    "save_checkpoint",
    "train",
    "training_data",
]
