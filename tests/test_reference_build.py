"""The mode search (the gold-standard builder's gate, the lockstep samplers' starts), on a
posterior whose modes and masses are known."""

from __future__ import annotations

import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from toy_targets import ThetaTarget

from inference_comparisons.estimators.modes import find_modes, laplace_starts
from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.references import GATES, GoldStandardError, build_reference
from inference_comparisons.references.evidence import log_density_where_computable
from zoo.base import Draws, Target

_F64 = torch.float64
#: Two well-separated bumps of sd 0.5 at (-3, 0) and (3, 0), weighted 0.7 and 0.3,
#: under a broad Normal(0, 10^2) prior that is symmetric about 0. The bumps are 12 sds apart,
#: so each one's Laplace approximation is exact up to e^-72, and the prior changes both
#: masses alike: the second mode's log mass relative to the first is log(0.3 / 0.7).
_CENTRES = torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=_F64)
_WEIGHTS = torch.tensor([0.7, 0.3], dtype=_F64)
_PRIOR = dist.Normal(torch.zeros(2, dtype=_F64), 10.0).to_event(1)


def _log_likelihood(theta: torch.Tensor) -> torch.Tensor:
    bumps = dist.Normal(_CENTRES, 0.5).to_event(1).log_prob(theta.unsqueeze(-2))
    return (bumps + _WEIGHTS.log()).logsumexp(-1)


BIMODAL = ThetaTarget(_PRIOR, _log_likelihood)


class _BimodalModel:
    """Just enough of a ZooModel for build_reference."""

    name = "bimodal"
    problem: Target = BIMODAL

    def config(self) -> dict:
        return {}

    def reference_key(self, target: str) -> dict:
        return {}

    def target(self, data: torch.Tensor, target: str) -> Target:
        return self.problem


def test_find_modes_finds_both_modes_with_their_laplace_masses():
    pyro.set_rng_seed(0)
    modes, summary = find_modes(FlatPotential(BIMODAL), num_starts=20)
    assert summary["starts"] == 20 and summary["converged"] == sum(m.starts for m in modes)
    assert summary["grad_evals"] > 0
    assert len(modes) == 2, modes
    heavy, light = modes
    torch.testing.assert_close(heavy.location, _CENTRES[0], atol=0.02, rtol=0)  # the prior pulls by 3/400
    torch.testing.assert_close(light.location, _CENTRES[1], atol=0.02, rtol=0)
    assert light.log_mass - heavy.log_mass == pytest.approx(math.log(0.3 / 0.7), abs=1e-6)


def test_laplace_starts_are_draws_of_the_heavy_modes_laplace_approximation():
    pyro.set_rng_seed(0)
    potential = FlatPotential(BIMODAL)
    starts = laplace_starts(potential, num_starts=20, num_draws=4000)
    assert potential.counted.grad_evals > 0  # the search is counted on the caller's potential
    # The heavy bump's Laplace approximation is N((-3, 0), 0.5^2 I) up to the prior's pull
    # (3/400 in the mean): a mean within 5 standard errors and an sd within 5 of its own.
    z = (starts.mean(0) - _CENTRES[0]) / (0.5 / math.sqrt(len(starts)))
    assert z.abs().max() < 5, z
    sd_z = (starts.std(0) - 0.5) / (0.5 / math.sqrt(2 * len(starts)))
    assert sd_z.abs().max() < 5, sd_z


def test_build_reference_refuses_a_posterior_with_a_heavy_second_mode_before_running_chains():
    with pytest.raises(GoldStandardError, match=r"modes the chains would not cross between .*0\.429") as info:
        build_reference(_BimodalModel(), torch.zeros(1, 1), num_chains=2, draws_per_chain=10, num_warmup=10)
    assert str(GATES["other_mode_mass_max"]) in str(info.value)


def test_draws_whose_density_cannot_be_computed_get_weight_zero_and_are_counted():
    """As a Cholesky far out in a proposal's tail does: the whole batch raises."""
    class Fragile(ThetaTarget):
        def log_density(self, draws: Draws) -> torch.Tensor:
            if bool((draws["theta"].abs() > 20).any()):
                raise torch.linalg.LinAlgError("not positive-definite")
            return super().log_density(draws)

    theta = torch.randn(10, 2, dtype=_F64)
    theta[[3, 7], 0] = 30.0
    values, failed = log_density_where_computable(Fragile(_PRIOR, _log_likelihood), {"theta": theta})
    assert failed == 2
    assert torch.isneginf(values[[3, 7]]).all()
    keep = [i for i in range(10) if i not in (3, 7)]
    torch.testing.assert_close(values[keep], BIMODAL.log_density({"theta": theta[keep]}))


def test_a_build_short_of_the_ess_gate_says_how_many_draws_would_pass():
    """One bump only: 8 ChEES chains x 50 draws cannot reach an ESS of 10,000, and the error says
    what ``--draws-per-chain`` would, from the ESS per draw the run measured."""
    model = _BimodalModel()
    model.problem = ThetaTarget(_PRIOR, dist.Normal(_CENTRES[0], 0.5).to_event(1).log_prob)
    pyro.set_rng_seed(0)
    with pytest.raises(GoldStandardError, match="ess_min=") as info:
        build_reference(model, torch.zeros(1, 1), num_chains=8, draws_per_chain=50, num_warmup=50,
                        num_particles=1_000)
    found = re.search(r"ESS per draw was ([0-9.e+-]+), so about (\d+) draws per chain would pass "
                      r"\(--draws-per-chain", str(info.value))
    assert found, str(info.value)
    rate, needed = float(found.group(1)), int(found.group(2))
    assert 0 < rate and needed > 50
    assert needed == pytest.approx(1.5 * GATES["ess_min"] / (rate * 8), rel=1e-2)  # ESS_MARGIN, 8 chains


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_build_reference_refuses_an_impossible_number_of_draws(bad):
    with pytest.raises(ValueError, match=f"draws_per_chain must be an integer in 1..*got {bad!r}"):
        build_reference(_BimodalModel(), torch.zeros(1, 1), draws_per_chain=bad)
