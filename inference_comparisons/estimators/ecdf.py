"""The uniformity test of simulation-based calibration: the ECDF of ranks against the
discrete uniform law, with simultaneous bands (Säilynoja, Bürkner & Vehtari 2022).

N simulations each give a rank r in 0..L (L posterior draws). Under calibration the ranks
are independent and uniform on 0..L, so at each of the L interior grid points z_j = j / (L + 1)
the count #{r < j} is Binomial(N, z_j). The test statistic is the smallest two-sided
binomial tail probability over the grid,

    t = min_j 2 min(P(B_j <= c_j), P(B_j >= c_j)),   B_j ~ Binomial(N, z_j),  c_j = #{r < j},

small when the ECDF strays anywhere. Its null law has no closed form (the counts are
dependent), so it is simulated once per (N, L) from exactly uniform ranks: the p-value is
the share of null statistics at or below the observed one, and the simultaneous 1 - alpha
band is the pointwise binomial interval at the level gamma, the alpha-quantile of the null
statistic (every null ECDF stays inside it with probability 1 - alpha); far in the tail,
where the simulation cannot resolve it, the p-value is bounded by L t instead. This is the
simulation variant of Säilynoja et al.'s procedure, exact for discrete ranks up to the
Monte Carlo error of NULL_SIMULATIONS draws (the p-value's standard error is at most
sqrt(p (1 - p) / NULL_SIMULATIONS) <= 0.005).

References: Talts et al. (2018) arXiv:1804.06788; Säilynoja, Bürkner & Vehtari (2022)
Statistics and Computing 32:32; Modrák et al. (2023) Bayesian Analysis (the log likelihood
as a test quantity).
"""

from __future__ import annotations

import functools
from typing import Mapping, NamedTuple

import numpy as np
from scipy import stats

__all__ = ["NULL_SIMULATIONS", "EcdfBand", "combined_pvalue", "ecdf_band", "uniformity_pvalues",
           "uniformity_pvalue"]

#: Null simulations behind each (N, L): the p-value's Monte Carlo error is below 0.005.
NULL_SIMULATIONS = 10_000
#: Seed of the null simulations: the test is a deterministic function of the ranks.
NULL_SEED = 20220214


def _check(ranks: np.ndarray, num_draws: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or len(ranks) < 1:
        raise ValueError(f"ranks must be a non-empty 1-D array (one rank a simulation), got shape {ranks.shape}")
    if not np.issubdtype(ranks.dtype, np.integer) or ranks.min() < 0 or ranks.max() > num_draws:
        raise ValueError(f"ranks must be integers in 0..{num_draws} (the number of draws), got values in "
                         f"{ranks.min()}..{ranks.max()}")
    return ranks


def _tail_statistic(counts: np.ndarray, num_simulations: int, num_draws: int) -> np.ndarray:
    """The smallest two-sided binomial tail probability over the grid, per row of ``counts``
    (rows of ECDF counts #{r < j}, j = 1..L)."""
    grid = np.arange(1, num_draws + 1) / (num_draws + 1)
    lower = stats.binom.cdf(counts, num_simulations, grid)
    upper = stats.binom.sf(counts - 1, num_simulations, grid)
    return np.minimum(1.0, 2 * np.minimum(lower, upper)).min(-1)


def _counts(ranks: np.ndarray, num_draws: int) -> np.ndarray:
    """#{r < j} for j = 1..L, for each row of ranks (..., N)."""
    histogram = np.apply_along_axis(np.bincount, -1, ranks, minlength=num_draws + 1)
    return np.cumsum(histogram, -1)[..., :-1]


@functools.lru_cache(maxsize=32)
def _null_statistics(num_simulations: int, num_draws: int) -> np.ndarray:
    generator = np.random.default_rng(NULL_SEED)
    ranks = generator.integers(0, num_draws + 1, size=(NULL_SIMULATIONS, num_simulations))
    return np.sort(_tail_statistic(_counts(ranks, num_draws), num_simulations, num_draws))


def uniformity_pvalue(ranks: np.ndarray, num_draws: int) -> float:
    """The p-value of the hypothesis that ``ranks`` (N integers in 0..L) are i.i.d. uniform."""
    ranks = _check(ranks, num_draws)
    observed = _tail_statistic(_counts(ranks, num_draws), len(ranks), num_draws)
    null = _null_statistics(len(ranks), num_draws)
    simulated = (np.searchsorted(null, observed, side="right") + 1) / (len(null) + 1)
    # Below the simulation's resolution 1/(NULL_SIMULATIONS + 1), Bonferroni over the L grid
    # points bounds the p-value: P(t <= observed) <= L * observed. Without it a test over many
    # quantities (Bonferroni again) could never reject.
    return float(min(simulated, num_draws * observed))


def uniformity_pvalues(ranks: Mapping[str, np.ndarray], num_draws: int) -> dict[str, np.ndarray]:
    """The p-value of every scalar of every test quantity: ``(n,)`` per name, from ranks
    ``(N, n)`` per name."""
    return {name: np.array([uniformity_pvalue(column, num_draws) for column in np.asarray(values).T])
            for name, values in ranks.items()}


def combined_pvalue(pvalues: Mapping[str, np.ndarray]) -> float:
    """One p-value for many scalars: the smallest, Bonferroni-adjusted by their number
    (valid whatever their dependence); NaN for none."""
    everything = np.concatenate([np.asarray(p).reshape(-1) for p in pvalues.values()]) if pvalues else np.array([])
    return float(min(1.0, everything.min() * len(everything))) if len(everything) else float("nan")


class EcdfBand(NamedTuple):
    """The ECDF difference F_N(z) - z of the ranks at the grid z_j = j / (L + 1), and the
    simultaneous band (lower, upper) it stays inside with probability 1 - alpha under
    calibration."""

    grid: np.ndarray
    difference: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def ecdf_band(ranks: np.ndarray, num_draws: int, alpha: float = 0.05) -> EcdfBand:
    """The ECDF difference of ``ranks`` with its simultaneous 1 - ``alpha`` band."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    ranks = _check(ranks, num_draws)
    num = len(ranks)
    grid = np.arange(1, num_draws + 1) / (num_draws + 1)
    gamma = float(np.quantile(_null_statistics(num, num_draws), alpha))
    lower = stats.binom.ppf(gamma / 2, num, grid) / num - grid
    upper = stats.binom.ppf(1 - gamma / 2, num, grid) / num - grid
    return EcdfBand(grid, _counts(ranks, num_draws) / num - grid, lower, upper)
