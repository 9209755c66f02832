"""Disentanglement of a VAE's codes, measured against the known generating factors of the
swiss roll: its angle t = 1.5 pi (1 + 2 Phi(z_1)) and its height z_2 (``zoo.vae.data``).

A code is the encoder's mean mu(x) of a held-out draw x whose factors are known. A code
dimension is *active* when its mean varies over the data, Var_x(mu_j(x)) > 0.01 (Burda,
Grosse & Salakhutdinov 2016); an inactive one has collapsed to the prior (q(z_j | x) is the
prior whatever x, and the decoder ignores z_j), so it carries no information about anything,
whatever tiny variation its mean keeps; the measures below are scale-free and would read
that variation, so they treat an inactive dimension as carrying none. Three measures, each
a function:

- :func:`correlation_matrix`: |Pearson correlation| of each code dimension with each factor.
- :func:`probe_r2`: the held-out R^2 of a linear regression of each factor on all the codes
  (fit on one half of the points, scored on the other): how much of a factor is *linearly*
  readable from the code, whatever its axes.
- :func:`mutual_information_gap` (MIG; Chen, Li, Grosse & Duvenaud 2018): for each factor
  v_k, the mutual information of the most informative code dimension minus that of the
  second most, divided by the factor's entropy H(v_k), averaged over factors. 1: each
  factor is captured by one dimension alone; 0: no dimension stands out. Estimator: the
  discretised plug-in estimator of Locatello et al. (2019, disentanglement_lib): codes and
  factors are each cut into :data:`MIG_BINS` equal-width bins and I and H are computed from
  the empirical joint histogram. It is biased upwards by about (B - 1)^2 / (2 N) nats for
  independent variables, about 0.1 nats at B = 20 and N = 2,000, so the gap (a difference of
  two such estimates) and its ratio to H are what is reported, never I alone.

:func:`measure` applies all three to codes (with the active-unit rule), :func:`disentanglement`
to a VAE's encoder on held-out swiss-roll draws.

References: Higgins et al. (2017) ICLR, "beta-VAE"; Chen, Li, Grosse & Duvenaud (2018)
NeurIPS, "Isolating sources of disentanglement in VAEs"; Locatello et al. (2019) ICML,
"Challenging common assumptions in the unsupervised learning of disentangled
representations"; Roweis & Saul (2000) Science 290:2323 (the swiss roll).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from zoo.vae.data import ground_truth
from zoo.vae.model import VAE

__all__ = ["ACTIVE_THRESHOLD", "FACTORS", "MIG_BINS", "NUM_BOOTSTRAP", "Disentanglement", "correlation_matrix", "disentanglement",
           "measure", "mutual_information_gap", "probe_r2", "swiss_roll_factors"]

#: The swiss roll's known generating factors, in the order :func:`swiss_roll_factors` gives them.
FACTORS = ("angle", "height")
#: Equal-width bins of the discretised mutual-information estimator (disentanglement_lib's default).
MIG_BINS = 20
#: Var_x(mu_j(x)) above which a code dimension is active (Burda et al. 2016's threshold).
ACTIVE_THRESHOLD = 0.01
#: Seed of the held-out ground-truth draws the measures use (the training data used 1, the
#: harness's held-out data 2: zoo.vae.data).
DISENTANGLEMENT_SEED = 3

_F64 = torch.float64


def swiss_roll_factors(z: torch.Tensor) -> torch.Tensor:
    """(N, 2) true latents of the swiss-roll decoder -> (N, 2) factors (angle, height)."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=_F64), 1.0)
    return torch.stack([1.5 * math.pi * (1 + 2 * normal.cdf(z[:, 0])), z[:, 1]], dim=-1)


def _check(codes: torch.Tensor, factors: torch.Tensor) -> None:
    if codes.dim() != 2 or factors.dim() != 2 or len(codes) != len(factors) or len(codes) < 4:
        raise ValueError(f"codes and factors must be (N, d) and (N, K) with the same N >= 4, got shapes "
                         f"{tuple(codes.shape)} and {tuple(factors.shape)}")


def correlation_matrix(codes: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(d, K): |corr(code_j, factor_k)|."""
    _check(codes, factors)
    c = (codes - codes.mean(0)) / codes.std(0)
    f = (factors - factors.mean(0)) / factors.std(0)
    return (c.T @ f / (len(codes) - 1)).abs()


def probe_r2(codes: torch.Tensor, factors: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(K,): held-out R^2 of least squares factor_k ~ codes (with an intercept), fit on a
    random half of the points and scored on the other half."""
    _check(codes, factors)
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed))
    fit, held_out = order[: len(codes) // 2], order[len(codes) // 2:]
    design = torch.cat([torch.ones(len(codes), 1, dtype=codes.dtype), codes], dim=-1)
    coefficients = torch.linalg.lstsq(design[fit], factors[fit]).solution
    residual = factors[held_out] - design[held_out] @ coefficients
    total = factors[held_out] - factors[held_out].mean(0)
    return 1 - residual.pow(2).sum(0) / total.pow(2).sum(0)


def _discretise(values: torch.Tensor, bins: int) -> torch.Tensor:
    """(N, m) -> (N, m) bin indices 0..bins-1 of equal-width bins over each column's range."""
    low, high = values.min(0).values, values.max(0).values
    scaled = (values - low) / torch.where(high > low, high - low, torch.ones_like(high))
    return (scaled * bins).long().clamp(0, bins - 1)


def _entropy(counts: torch.Tensor) -> torch.Tensor:
    p = counts / counts.sum()
    return -(p[p > 0] * p[p > 0].log()).sum()


def mutual_information_gap(codes: torch.Tensor, factors: torch.Tensor, bins: int = MIG_BINS
                           ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(MIG, per-factor gaps (K,), mutual information (d, K) in nats), by the discretised
    plug-in estimator (module docstring). Needs at least two code dimensions."""
    _check(codes, factors)
    if codes.shape[1] < 2:
        raise ValueError(f"the mutual information gap compares two code dimensions; these codes have {codes.shape[1]}")
    code_bins, factor_bins = _discretise(codes, bins), _discretise(factors, bins)
    information = torch.zeros(codes.shape[1], factors.shape[1], dtype=_F64)
    for j in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            joint = torch.bincount(code_bins[:, j] * bins + factor_bins[:, k], minlength=bins * bins).reshape(bins, bins)
            information[j, k] = _entropy(joint.sum(1)) + _entropy(joint.sum(0)) - _entropy(joint.reshape(-1))
    top = information.sort(dim=0, descending=True).values
    gaps = (top[0] - top[1]) / _factor_entropies(factors, bins)
    return float(gaps.mean()), gaps, information


def _factor_entropies(factors: torch.Tensor, bins: int = MIG_BINS) -> torch.Tensor:
    """(K,) plug-in entropies of the discretised factors, in nats."""
    factor_bins = _discretise(factors, bins)
    return torch.stack([_entropy(torch.bincount(factor_bins[:, k], minlength=bins)) for k in range(factors.shape[1])])


class Disentanglement(NamedTuple):
    """The three measures of one VAE against the swiss roll's factors (:data:`FACTORS`), with
    each code dimension's activity Var_x(mu_j(x)) and whether it is active, and the bootstrap
    standard errors of the MIG and the probe R^2 (over resamples of the data points)."""

    activity: torch.Tensor
    active: torch.Tensor
    mig: float
    mig_se: float
    mig_per_factor: torch.Tensor
    mutual_information: torch.Tensor
    correlation: torch.Tensor
    probe_r2: torch.Tensor
    probe_r2_se: torch.Tensor
    num_datapoints: int


#: Bootstrap resamples behind the standard errors of :func:`measure`.
NUM_BOOTSTRAP = 200


def _mig_and_probe(codes: torch.Tensor, factors: torch.Tensor, active: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-factor MIG, mutual information with the inactive rows 0, probe R^2) of one sample."""
    _, _, information = mutual_information_gap(codes, factors)
    information = information * active[:, None]
    top = information.sort(dim=0, descending=True).values
    return (top[0] - top[1]) / _factor_entropies(factors), information, probe_r2(codes[:, active], factors)


def measure(codes: torch.Tensor, factors: torch.Tensor, num_bootstrap: int = NUM_BOOTSTRAP,
            seed: int = 0) -> Disentanglement:
    """The three measures of ``codes`` (N, d) against ``factors`` (N, K). An inactive
    dimension (module docstring) has mutual information and correlation 0 and is left out of
    the probe, so a fully collapsed code scores MIG 0 and R^2 about 0. Standard errors: the sd
    of the MIG and the R^2 over ``num_bootstrap`` resamples of the N points (with the units'
    activity fixed): the sampling error of the held-out draws, not the spread over training
    seeds, which one checkpoint per beta cannot show."""
    _check(codes, factors)
    activity = codes.var(0)
    active = activity > ACTIVE_THRESHOLD
    per_factor, information, r2 = _mig_and_probe(codes, factors, active)
    generator = torch.Generator().manual_seed(seed)
    resampled = [_mig_and_probe(codes[index], factors[index], active)
                 for index in torch.randint(len(codes), (num_bootstrap, len(codes)), generator=generator)]
    migs = torch.stack([r[0].mean() for r in resampled])
    return Disentanglement(activity=activity, active=active, mig=float(per_factor.mean()), mig_se=float(migs.std()),
                           mig_per_factor=per_factor, mutual_information=information,
                           correlation=correlation_matrix(codes, factors) * active[:, None], probe_r2=r2,
                           probe_r2_se=torch.stack([r[2] for r in resampled]).std(0), num_datapoints=len(codes))


def disentanglement(model: VAE, num_datapoints: int = 2000, seed: int = DISENTANGLEMENT_SEED) -> Disentanglement:
    """:func:`measure` of ``model``'s encoder means on ``num_datapoints`` held-out swiss-roll
    draws against their known factors (only the swiss roll has known factors)."""
    if model.dataset != "swiss_roll":
        raise ValueError(f"vae: disentanglement is measured against known generating factors, which only the "
                         f"swiss_roll dataset has (angle and height); this model has dataset={model.dataset!r}")
    truth = ground_truth("swiss_roll", num_datapoints, seed)
    encoder, _ = model.networks()
    with torch.no_grad():
        codes = encoder(truth.data)[0]
    return measure(codes, swiss_roll_factors(truth.true_latents["z"]))
