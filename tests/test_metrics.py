"""The effective sample size the gates use: Pyro's estimator, in linear memory, with Stan's
bound for antithetic chains."""

from __future__ import annotations

import math

import pytest
import torch
from pyro.ops.stats import effective_sample_size as pyro_effective_sample_size

from inference_comparisons.estimators.sampler_stats import effective_sample_size


def _ar1(num_chains: int, num_draws: int, event: tuple[int, ...], phi: float = 0.9) -> torch.Tensor:
    generator = torch.Generator().manual_seed(num_chains * 1000 + num_draws)
    noise = torch.randn(num_chains, num_draws, *event, generator=generator, dtype=torch.float64)
    draws = noise.clone()
    for t in range(1, num_draws):
        draws[:, t] = phi * draws[:, t - 1] + noise[:, t]
    return draws


@pytest.mark.parametrize("num_chains,num_draws,event", [(4, 400, (2, 3)), (3, 401, (5,)), (1, 300, (2,)),
                                                        (2, 3, ())])
def test_effective_sample_size_is_pyros_estimator(num_chains, num_draws, event):
    draws = _ar1(num_chains, num_draws, event)
    expected = pyro_effective_sample_size(draws, chain_dim=0, sample_dim=1)
    torch.testing.assert_close(effective_sample_size(draws), expected, rtol=1e-12, atol=0)


def test_effective_sample_size_of_a_reference_build_fits_in_memory():
    """4 x 52,000 draws of 36 covariance entries: Pyro 1.9.2's running minimum would
    allocate ~195 GB here. An AR(1) with phi = 0.9 has ESS = n (1 - phi) / (1 + phi)."""
    draws = _ar1(4, 52_000, (36,))
    ess = effective_sample_size(draws)
    assert ess.shape == (36,)
    expected = 4 * 52_000 * 0.1 / 1.9
    # The 36 estimates scatter with a relative sd of about 4% (measured: 3.8%); 25% is > 6 sd.
    assert ((ess / expected - 1).abs() < 0.25).all(), ess


def test_antithetic_chains_get_stans_bound_not_a_negative_ess():
    """phi = -0.9: the pairs of autocorrelations sum below zero, and Pyro's estimator
    returns a negative ESS; Stan and ArviZ cap ESS at C N log10(C N)."""
    draws = _ar1(2, 15, (3,), phi=-0.9)
    total = 2 * 15
    assert (pyro_effective_sample_size(draws, chain_dim=0, sample_dim=1) < 0).any()  # what it replaces
    ess = effective_sample_size(draws)
    assert (ess > 0).all() and (ess <= total * math.log10(total) + 1e-9).all(), ess
