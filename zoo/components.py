"""Gaussian components, as the mixture's components and the HMM's emissions have them: their
prior hyperparameters, their priors, and the part of a mean-field guide that covers them.

Generative process (K components, each a number or a row of D numbers)::

    locs   ~ K i.i.d. Normal(mean_prior_loc, mean_prior_scale^2) means, ordered (by their
             first coordinate), see zoo.distributions.OrderedNormal
    scales ~ LogNormal(scale_prior_loc, scale_prior_scale)      scale_prior = "lognormal"
             HalfNormal(scale_prior_scale)                      scale_prior = "half_normal"
             i.i.d., shape (K,) or (K, D)

The half-normal is Stan's ``real<lower=0> sigma; sigma ~ normal(0, s)``, the weakly
informative scale prior of Gelman (2006) and of posteriordb's mixture; the log-normal, the
zoo's default, keeps every scale away from zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import OrderedTransform
from torch.distributions import biject_to

from zoo.distributions import OrderedFirstColumnTransform, OrderedNormal
from zoo.em import half_normal_scale_mode, lognormal_scale_mode, normal_mean_mode
from zoo.validation import check_choice, check_positive

__all__ = ["SCALE_PRIORS", "GaussianComponents"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

#: The scale priors a model's components may have (module docstring).
SCALE_PRIORS = ("lognormal", "half_normal")


@dataclass(frozen=True, kw_only=True)
class GaussianComponents:
    """A model's hyperparameters of K Gaussian components (a dataclass mixin: keyword-only
    fields, so they follow the model's own in its constructor).

    ``mean_prior_loc`` is one prior mean for every component (an exchangeable prior: the
    order statistics) or K of them, one per component in increasing order (the truncated
    prior a Stan program with ``ordered`` means writes); ``positive_means`` bounds the means
    below by 0 (Stan's ``positive_ordered``; K numbers only). ``scale_prior`` is the family of
    the scales' prior (:data:`SCALE_PRIORS`); ``scale_prior_loc`` is the log-normal's
    location, so a half-normal needs it at 0."""

    mean_prior_loc: float | tuple[float, ...] = 0.0
    mean_prior_scale: float = 5.0
    positive_means: bool = False
    scale_prior: str = "lognormal"
    scale_prior_loc: float = 0.0
    scale_prior_scale: float = 1.0

    #: ``ZooModel.backward_compatible``: the fields added after references were stored.
    backward_compatible: ClassVar[Mapping[str, Any]] = {"scale_prior": "lognormal", "positive_means": False}

    def check_components(self, model: str, num_components: int, dim: int | None = None) -> None:
        """``ValueError`` naming a hyperparameter that is not a positive scale, prior means
        that are not one number or K, positive means of K rows, an unknown scale-prior
        family, or a location given to a half-normal."""
        for key in ("mean_prior_scale", "scale_prior_scale"):
            check_positive(model, key, getattr(self, key))
        loc = self.mean_prior_loc
        if not (_is_number(loc) or (isinstance(loc, (tuple, list)) and len(loc) == num_components
                                    and all(_is_number(v) for v in loc))):
            raise ValueError(f"{model}: mean_prior_loc must be one number or {num_components} numbers (one per "
                             f"component), got {loc!r}")
        if not isinstance(self.positive_means, bool):
            raise ValueError(f"{model}: positive_means must be True or False, got {self.positive_means!r}")
        if self.positive_means and dim is not None:
            raise ValueError(f"{model}: positive_means bounds K numbers (the HMM's state means), and these means "
                             f"are K rows of {dim}")
        check_choice(model, "scale_prior", self.scale_prior, SCALE_PRIORS)
        if self.scale_prior == "half_normal" and self.scale_prior_loc != 0:
            raise ValueError(f"{model}: scale_prior_loc is the log-normal's location, and a half-normal has none: "
                             f"leave it at 0 with scale_prior='half_normal' (got {self.scale_prior_loc!r})")

    def components_without_mode(self) -> str | None:
        """Why EM's closed-form M-steps do not apply to these priors, or ``None``: they relabel
        the components by sorting, which leaves the log joint unchanged only under an
        exchangeable prior, and they ignore a positivity bound."""
        if not _is_number(self.mean_prior_loc) or self.positive_means:
            return ("EM's M-steps relabel the components by sorting their means, which keeps the log joint only "
                    "under one shared prior mean and no positivity bound; these priors have "
                    f"mean_prior_loc={self.mean_prior_loc!r}, positive_means={self.positive_means}")
        return None

    def component_priors(self, num_components: int, dim: int | None = None) -> dict[str, dist.Distribution]:
        """The priors of ``locs`` and ``scales``: K numbers each (``dim=None``), or K rows of
        ``dim`` numbers."""
        f64 = dict(dtype=torch.float64)
        shape = [num_components] if dim is None else [num_components, dim]
        return {
            "locs": OrderedNormal(torch.tensor(self.mean_prior_loc, **f64), torch.tensor(float(self.mean_prior_scale), **f64),
                                  num_components, dim, positive=self.positive_means),
            "scales": self._scale_prior().expand(shape).to_event(len(shape)),
        }

    def _scale_prior(self) -> dist.Distribution:
        scale = torch.tensor(float(self.scale_prior_scale), dtype=torch.float64)
        if self.scale_prior == "half_normal":
            return dist.HalfNormal(scale)
        return dist.LogNormal(torch.tensor(float(self.scale_prior_loc), dtype=torch.float64), scale)

    def component_mode(self, data: torch.Tensor, responsibilities: torch.Tensor,
                       scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EM's conditional M-steps of the components (``zoo.em``): the means given the
        current ``scales``, then the scales given those means. ``data`` is (N, D) (or (N,)),
        ``responsibilities`` (N, K) and ``scales`` (K, D) (or (K,)); returns (locs, scales)
        of the components' shape, not yet ordered."""
        x = data.reshape(data.shape[0], -1)  # (N, D)
        counts = responsibilities.sum(0).unsqueeze(-1)  # (K, 1)
        variances = scales.reshape(counts.shape[0], -1) ** 2
        prior_locs = torch.tensor(self.mean_prior_loc, dtype=torch.float64).reshape(-1, 1)  # (1 or K, 1)
        locs = normal_mean_mode(counts, responsibilities.T @ x, variances, prior_locs, self.mean_prior_scale)
        sum_squares = (responsibilities.unsqueeze(-1) * (x.unsqueeze(1) - locs) ** 2).sum(0)  # (K, D)
        new_scales = (half_normal_scale_mode(counts, sum_squares, self.scale_prior_scale)
                      if self.scale_prior == "half_normal" else
                      lognormal_scale_mode(counts, sum_squares, self.scale_prior_loc, self.scale_prior_scale))
        return locs.reshape(scales.shape), new_scales.reshape(scales.shape)

    def component_guide(self, start: torch.Tensor, scales: bool = True) -> None:
        """Mean-field guide sites ``locs`` (a normal in the ordering transform's unconstrained
        space, started at ``start``: K increasing (and positive, with ``positive_means``)
        numbers, or K rows with increasing first coordinates) and, unless ``scales`` is false
        (scales known), ``scales`` (log-normal, started at 1)."""
        f64 = dict(dtype=torch.float64)
        ordering = (OrderedFirstColumnTransform() if start.dim() > 1 else
                    biject_to(constraints.positive_ordered_vector) if self.positive_means else OrderedTransform())
        locs_loc = pyro.param("locs_loc", ordering.inv(start))
        locs_scale = pyro.param("locs_scale", torch.full(start.shape, 0.1, **f64), constraint=constraints.positive)
        pyro.sample("locs", dist.TransformedDistribution(dist.Normal(locs_loc, locs_scale).to_event(start.dim()),
                                                         [ordering]))
        if not scales:
            return
        scales_loc = pyro.param("scales_loc", torch.zeros(start.shape, **f64))
        scales_scale = pyro.param("scales_scale", torch.full(start.shape, 0.1, **f64), constraint=constraints.positive)
        pyro.sample("scales", dist.LogNormal(scales_loc, scales_scale).to_event(start.dim()))
