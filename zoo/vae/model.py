"""The VAE model: a nonlinear latent-variable model with an amortised guide.

Generative process::

    decoder f_phi: an MLP (tanh hidden layers), trained once and then fixed
    for n in 1..N:
        z_n ~ Normal(0, I_d)                                   # "z", local, in the data plate
        x_n ~ Bernoulli(logits = f_phi(z_n))                   # dataset "digits"
        x_n ~ Normal(f_phi(z_n), diag(sigma_phi)^2)            # datasets "curve", "swiss_roll"
    amortised guide (encoder): q_psi(z_n | x_n) = Normal(mu_psi(x_n), diag(s_psi(x_n))^2)

One registered model, ``vae``, with a ``dataset`` hyperparameter that fixes the likelihood,
the latent dimension and the network sizes (see :data:`zoo.vae.networks.SPECS`):

- ``curve`` (default, fastest): 1-D z; data from the known decoder
  x = (z + 0.3 z^2, sin 2z) + Normal(0, 0.05^2) noise; Gaussian likelihood.
- ``swiss_roll``: 2-D z; t = 1.5 pi (1 + 2 Phi(z_1)), x = (t cos t / 5, z_2, t sin t / 5)
  + Normal(0, 0.05^2) noise; Gaussian likelihood.
- ``digits``: 2-D z; scikit-learn's 8x8 digits binarised (pixel / 16 > 0.5); Bernoulli
  likelihood.

Targets. ``latent`` fixes the trained decoder and infers z per data point (z is a local
latent in the data plate). There is no ``posterior`` target: the decoder weights are
fitted by maximum (marginal) likelihood and carry no prior, so there is no posterior over
them to infer or score. ``simulate`` draws data from the trained decoder (so the latent
target is well specified and the true codes are known); ``load_dataset`` returns held-out
data that training never saw (test draws from the known curve/swiss-roll decoder, or the
held-out digit images), and :func:`zoo.vae.data.ground_truth` gives draws from the known decoders with
their true latents.

Reference (``latent``, built by ``python -m inference_comparisons reference vae --target
latent``): log p(x_n) per data point by importance sampling with 10^5 particles from a
*defensive* mixture built on the encoder (0.45 encoder, 0.45 Student-t(2) at the encoder
with twice its scale, 0.1 prior; Hesterberg 1995), with standard error and k̂ per data
point. The plain encoder is not enough: the learned curve decoder folds, some posteriors
are bimodal, and the encoder (one Gaussian) misses a mode, under-estimating log p(x_n) by
up to 5 nats on single points. Moments of z come from the same proposal, self-normalised
per data point (se = sd / sqrt(ESS)). Cross-checks recorded in provenance: an independent
Student-t importance sampler per data point (evidence) and NUTS on all data points' z
(moments). NUTS is a cross-check, not the source: on the shipped curve decoder its chains
agree (R-hat < 1.01) on only 62% of the data points, and where all chains sit in the same
wrong mode R-hat cannot tell. For the 1-D curve the tests check the reference against
exact quadrature (log p(x) and per-datapoint mean and sd).

Methods (``inference_comparisons``): ``svi_amortised`` evaluates the encoder as the
variational answer (ELBO, encoder moments, per-datapoint k̂); ``iwae`` is importance
sampling *per data point* with the encoder as proposal, i.e. the IWAE bound with K
particles; ``svi_semi_amortised`` refines a per-datapoint Gaussian started at the encoder;
``svi`` fits a mean-field AutoNormal from scratch and ``is_guide`` importance-samples all
data points jointly with it, ``is_prior`` with the prior (hopeless jointly over 200 points,
which is the point); ``nuts`` samples all z at once via ``Target.log_density``.

:func:`zoo.vae.gaps.inference_gaps` splits log p(x) - ELBO(encoder) into the approximation and
amortisation gaps (Cremer, Li & Duvenaud 2018); :func:`zoo.vae.gaps.iwae_bound` gives the
per-datapoint IWAE bound for any K. Latent-space plots live in :mod:`zoo.vae.latent`.

References: Kingma & Welling (2014) ICLR, "Auto-encoding variational Bayes"; Rezende,
Mohamed & Wierstra (2014) ICML; Burda, Grosse & Salakhutdinov (2016) ICLR, "Importance
weighted autoencoders"; Cremer, Li & Duvenaud (2018) ICML, "Inference suboptimality in
variational autoencoders"; Kim et al. (2018) ICML, "Semi-amortized variational
autoencoders"; Roweis & Saul (2000) Science 290:2323 (the swiss roll).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import pyro
import pyro.distributions as dist
import torch

from zoo.base import (Draws, LatentTarget, ModelInfo, Moments, Reference, Simulation, Target, ZooModel,
                      generative_process)
from zoo.distributions import DefensiveMixture
from zoo.validation import check_num_datapoints, validate_data
from zoo.vae.data import HELD_OUT_SEED, digits_split, ground_truth
from zoo.vae.networks import SPECS, Decoder, Encoder, Spec, check_dataset, log_weights
from zoo.vae.quadrature import GRID_LIMIT, GRID_POINTS, GridPosterior, grid_posterior, sample_grid_posterior
from zoo.vae.training import check_beta, load_checkpoint, weights_digest

__all__ = ["VAE", "VAELatent"]

_F64 = torch.float64
#: The literal block of the module docstring (inside a class body ``__doc__`` is the class's).
_PROCESS = generative_process(__doc__)
_DATASETS = {
    "simulated": "draws from the trained decoder (simulate); true codes known",
    "curve": "200 held-out draws from the known curve decoder (the model with dataset='curve')",
    "swiss_roll": "200 held-out draws from the known swiss-roll decoder (the model with dataset='swiss_roll')",
    "digits": "297 held-out binarised 8x8 scikit-learn digits (the model with dataset='digits')",
    "swiss_roll-beta4": "the swiss-roll held-out draws, for the beta-VAE checkpoint (dataset='swiss_roll', beta=4)",
    "digits-beta4": "the held-out digits, for the beta-VAE checkpoint (dataset='digits', beta=4)",
}
#: Each held-out dataset brings the model it is for (ModelInfo.dataset_configs): the
#: likelihood and checkpoint, and the beta it was trained with.
_DATASET_CONFIGS = {"curve": {"dataset": "curve"}, "swiss_roll": {"dataset": "swiss_roll"}, "digits": {"dataset": "digits"},
                    "swiss_roll-beta4": {"dataset": "swiss_roll", "beta": 4.0},
                    "digits-beta4": {"dataset": "digits", "beta": 4.0}}


@dataclass(frozen=True)
class VAE(ZooModel):
    """Variational autoencoder with a trained, fixed decoder (see the module docstring).

    ``dataset`` selects likelihood, latent dimension and checkpoint; ``beta`` the weight of
    the KL term the checkpoint was trained with (1: the plain VAE; 4: the shipped beta-VAEs
    of ``swiss_roll`` and ``digits``); ``checkpoint`` is a path to a checkpoint of one's own
    (default: the shipped ``zoo/checkpoints/vae-<dataset>[-beta<beta>].pt``), which must have
    been trained with that ``beta``.
    """

    dataset: str = "curve"
    checkpoint: str | None = None
    beta: float = 1.0

    name: ClassVar[str] = "vae"
    backward_compatible: ClassVar[Mapping[str, Any]] = {"beta": 1.0}
    info: ClassVar[ModelInfo] = ModelInfo(
        generative_process=_PROCESS,
        global_sites=(),  # decoder weights are trained parameters, not sample sites
        local_sites=("z",),
        targets=("latent",),
        datasets=_DATASETS,
        dataset_configs=_DATASET_CONFIGS,
        literature=(
            "Kingma & Welling (2014) ICLR, Auto-encoding variational Bayes",
            "Rezende, Mohamed & Wierstra (2014) ICML, Stochastic backpropagation",
            "Burda, Grosse & Salakhutdinov (2016) ICLR, Importance weighted autoencoders",
            "Cremer, Li & Duvenaud (2018) ICML, Inference suboptimality in variational autoencoders",
            "Kim, Wiseman, Miller, Sontag & Rush (2018) ICML, Semi-amortized variational autoencoders",
        ),
    )

    def __post_init__(self) -> None:
        check_dataset(self.dataset)
        check_beta(self.beta)
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise ValueError(f"vae: checkpoint must be a path string or None, got {self.checkpoint!r}")

    @property
    def spec(self) -> Spec:
        return SPECS[self.dataset]

    def config(self) -> dict[str, Any]:
        """The constructor fields plus a digest of the trained weights (for provenance; the
        digest is also what :meth:`reference_key` keys a stored reference by, so that it is
        never applied to a retrained decoder)."""
        return dict(super().config(), weights_sha256=weights_digest(self.dataset, self.checkpoint, self.beta))

    def networks(self) -> tuple[Encoder, Decoder]:
        encoder, decoder, _ = load_checkpoint(self.dataset, self.checkpoint, self.beta)
        return encoder, decoder

    def true_params(self) -> dict[str, torch.Tensor]:
        """No global sample sites: the decoder is fixed (its weights: :meth:`networks`)."""
        return {}

    def priors(self) -> dict[str, dist.Distribution]:
        """None: the decoder's weights are trained parameters, not sample sites."""
        return {}

    def validate(self, data: Any) -> torch.Tensor:
        spec = self.spec
        if spec.likelihood == "bernoulli":
            shape = tuple(getattr(data, "shape", ()))
            side = math.isqrt(spec.data_dim)
            if len(shape) == 3 and shape[1:] == (side, side):
                data = torch.as_tensor(data).reshape(shape[0], spec.data_dim)
            elif len(shape) in (2, 3) and shape[1:] != (spec.data_dim,):
                raise ValueError(
                    f"vae(digits): images must be {side}x{side} ({spec.data_dim} pixels), given as (N, {spec.data_dim}) "
                    f"or (N, {side}, {side}); got shape {shape}")
        x = validate_data(data, name=f"vae({self.dataset})", ndim=(2,), width=spec.data_dim)
        if spec.likelihood == "bernoulli":
            bad = ((x != 0) & (x != 1)).nonzero()
            if len(bad):
                index = bad[0].tolist()
                raise ValueError(
                    f"vae(digits): the Bernoulli likelihood needs binary pixels (0 or 1); found {x[tuple(index)].item()} "
                    f"at index {index}; binarise first, e.g. pixel / 16 > 0.5 as load_dataset('digits') does")
        return x

    def load_dataset(self, name: str) -> torch.Tensor:
        if name not in _DATASET_CONFIGS:
            raise ValueError(f"vae: unknown dataset {name!r}; accepted: {', '.join(_DATASET_CONFIGS)}")
        self.check_dataset_config(name)
        if self.dataset == "digits":
            return digits_split("test")[0]
        return ground_truth(self.dataset, self.spec.num_held_out, HELD_OUT_SEED).data

    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        """Data from the trained decoder: z ~ Normal(0, I), x ~ p(x | z)."""
        check_num_datapoints("vae", num_datapoints)
        _, decoder = self.networks()
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(num_datapoints, self.spec.latent_dim, generator=generator, dtype=_F64)
        out = decoder(z)
        if self.spec.likelihood == "bernoulli":
            x = torch.bernoulli(torch.sigmoid(out), generator=generator)
        else:
            x = out + decoder.log_scale.exp() * torch.randn(out.shape, generator=generator, dtype=_F64)
        return Simulation(data=x, true_params={}, true_latents={"z": z})

    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """z_n ~ Normal(0, I) in the data plate, x_n ~ p(x | z_n) with the fixed decoder.
        Broadcasts under outer particle plates (z of shape (..., N, d))."""
        _, decoder = self.networks()
        with pyro.plate("data", data.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.spec.latent_dim, dtype=_F64), 1.0).to_event(1))
            pyro.sample("obs", decoder.distribution(z), obs=data)

    def guide(self, data: torch.Tensor) -> None:
        """The amortised guide: the trained encoder, evaluated with its weights fixed (it
        is not registered with ``pyro.module``, so no SVI run can move it)."""
        encoder, _ = self.networks()
        loc, scale = encoder(data)
        with pyro.plate("data", data.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def reference_key(self, target: str) -> dict[str, Any]:
        """The likelihood and the trained weights: a reference depends on the decoder, not on
        the path its checkpoint was read from."""
        self.check_target(target)
        return {"dataset": self.dataset, "weights_sha256": weights_digest(self.dataset, self.checkpoint, self.beta)}

    def target(self, data: Any, target: str) -> Target:
        self.check_target(target)
        return VAELatent(self, self.validate(data))

    def log_weights(self, data: Any, num_particles: int, *, proposal: tuple[torch.Tensor, torch.Tensor] | None = None,
                    defensive: bool = False, chunk: int | None = None) -> torch.Tensor:
        """log p(x_n, z) - log q(z | x_n), (K, N), for K draws z ~ q per data point; q is
        the encoder, or the diagonal Gaussian ``proposal`` = (loc, scale), each (N, d).

        ``defensive=True`` draws from the :class:`~zoo.distributions.DefensiveMixture` of q, a
        Student-t(2) at q's location with twice its scale, and the prior (Hesterberg 1995):
        every weight is then at most p(x_n | z) / 0.1, so an encoder that is too narrow or
        misses a mode of a folded decoder's posterior cannot make the estimate of log p(x_n)
        collapse.
        """
        x = self.validate(data)
        encoder, decoder = self.networks()
        loc, scale = encoder(x) if proposal is None else proposal
        q = dist.Normal(loc, scale).to_event(1)
        if defensive:
            prior = dist.Normal(torch.zeros_like(loc), 1.0).to_event(1)
            q = DefensiveMixture([q, dist.StudentT(2.0, loc, 2 * scale).to_event(1), prior])
        # ~4 M hidden activations a pass: tens of MB in float64.
        chunk = chunk or max(1, 4_000_000 // (len(x) * max(self.spec.hidden)))
        with torch.no_grad():
            return torch.cat([log_weights(decoder, x, q, min(chunk, num_particles - start))[0]
                              for start in range(0, num_particles, chunk)])


class VAELatent(LatentTarget):
    """The codes z of every data point, the trained decoder fixed. Exact, by quadrature, for
    every shipped dataset (latent dimension 1 or 2: :mod:`zoo.vae.quadrature`); a decoder of
    one's own with more latent dimensions needs the importance-sampled reference
    (``python -m inference_comparisons reference vae --target latent``)."""

    latent_sites = ("z",)
    max_plate_nesting = 1
    dims = {"z": ("datapoint", "latent_dim")}
    has_amortised_guide = True

    def __init__(self, vae: VAE, data: torch.Tensor) -> None:
        super().__init__(vae, data)
        self.latent_dim = vae.spec.latent_dim
        _, self.decoder = vae.networks()
        self.has_exact = self.latent_dim in GRID_POINTS
        self._grid: GridPosterior | None = None

    def exact(self) -> Reference:
        """log p(x) = sum_n log p(x_n) and each z_n's posterior mean and sd, by quadrature on a
        grid (seconds; computed once per target), with its two error checks in provenance."""
        if not self.has_exact:
            raise NotImplementedError(f"vae: quadrature covers 1- or 2-D latents, this one has {self.latent_dim}")
        if self._grid is None:
            self._grid = grid_posterior(self.decoder, self.data)
        grid = self._grid
        axis = GRID_POINTS[self.latent_dim]
        return Reference(
            log_evidence=float(grid.log_evidence.sum()), log_evidence_se=0.0, exact=True,
            moments={"z": Moments(grid.mean, grid.sd, torch.zeros_like(grid.sd))}, local_marginals={},
            provenance={"method": (f"exact: quadrature of each p(z_n | x_n) on a {'x'.join([str(axis)] * self.latent_dim)} "
                                   f"grid over [-{GRID_LIMIT:g}, {GRID_LIMIT:g}]^{self.latent_dim} (zoo.vae.quadrature)"),
                        "grid_error": grid.grid_error, "edge_mass": grid.edge_mass,
                        "per_datapoint": {"log_evidence": grid.log_evidence.tolist()},
                        "model": self.zoo_model.name, "config": self.zoo_model.config()})

    def exact_draws(self, num_draws: int) -> Draws:
        """A grid cell by its posterior weight and a uniform position in it (zoo.vae.quadrature)."""
        if not self.has_exact:
            raise NotImplementedError(f"vae: quadrature covers 1- or 2-D latents, this one has {self.latent_dim}")
        return {"z": sample_grid_posterior(self.decoder, self.data, num_draws)}

    def amortised_guide(self) -> None:
        self.zoo_model.guide(self.data)

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        return self.decoder.distribution(draws["z"]).log_prob(self.data)  # (S, N)

    def log_density(self, draws: Draws) -> torch.Tensor:
        z = draws["z"]
        prior = dist.Normal(torch.zeros(self.latent_dim, dtype=torch.float64), 1.0).log_prob(z).sum((-1, -2))
        return prior + self.pointwise_log_likelihood(draws).sum(-1)

    def quantities(self, draws: Draws) -> Draws:
        return {"z": draws["z"]}
