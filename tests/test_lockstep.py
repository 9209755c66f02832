"""Many chains in lockstep, ChEES-HMC and NUTS: their pieces, the invariance of their fixed
kernels (a χ² test over many chains), and exact moments recovered within Monte Carlo error."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats
from toy_targets import ThetaTarget

import zoo
from inference_comparisons import run_inference, score
from inference_comparisons.estimators.chees import ChEESKernel, run_fixed_kernel, van_der_corput
from inference_comparisons.estimators.lockstep import warmup_windows
from inference_comparisons.estimators.lockstep_nuts import checkpoint_range, run_fixed_nuts
from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.estimators.sampler_stats import nested_rhat
from inference_comparisons.methods.lockstep import ChEES, LockstepNUTS

_F64 = torch.float64
#: A correlated 2-d Gaussian with unequal scales: a diagonal mass matrix cannot whiten it.
_GAUSSIAN = dist.MultivariateNormal(torch.tensor([1.0, -2.0], dtype=_F64),
                                    torch.tensor([[1.0, 0.8], [0.8, 4.0]], dtype=_F64))
#: Standard errors a Monte Carlo estimate may differ by before a test calls it a bug.
Z = 5.0


def test_the_jitter_sequence_covers_the_unit_interval_evenly():
    assert [van_der_corput(i) for i in range(1, 8)] == [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]
    first = sorted(van_der_corput(i) for i in range(1, 64))
    assert first == [k / 64 for k in range(1, 64)]


def test_mass_matrix_windows_follow_stans_schedule():
    assert warmup_windows(1000) == [100, 150, 250, 450, 950]
    windows = warmup_windows(200)
    assert windows[0] > 0.075 * 200 and windows[-1] == 200 - 10
    assert warmup_windows(10) == []


def test_nested_rhat_by_hand_and_its_two_limits():
    draws = torch.tensor([[0.0, 2.0], [1.0, 3.0], [4.0, 6.0], [5.0, 9.0]], dtype=_F64)  # 4 chains x 2 draws
    chain_means = torch.tensor([1.0, 2.0, 5.0, 7.0], dtype=_F64)
    between = torch.tensor([1.5, 6.0], dtype=_F64).var()  # superchain means
    within = (chain_means[:2].var() + chain_means[2:].var()) / 2 + draws.var(1).mean()
    assert float(nested_rhat(draws, 2)) == pytest.approx(math.sqrt(1 + float(between / within)))
    generator = torch.Generator().manual_seed(0)
    mixed = torch.randn(64, 10, 3, generator=generator, dtype=_F64)
    assert (nested_rhat(mixed, 8) < 1.05).all()
    apart = mixed + torch.arange(8, dtype=_F64).repeat_interleave(8)[:, None, None]  # superchains stuck apart
    assert (nested_rhat(apart, 8) > 1.5).all()
    with pytest.raises(ValueError, match="at least 2 superchains of equal size"):
        nested_rhat(mixed, 7)


def _chi_square_p_value(values: torch.Tensor, distribution: dist.Normal, bins: int = 16) -> float:
    """p-value of a χ² test that ``values`` come from ``distribution``, on equiprobable bins."""
    counts = torch.bincount((distribution.cdf(values) * bins).long().clamp(0, bins - 1), minlength=bins)
    return float(stats.chisquare(counts.numpy()).pvalue)


def _fixed_chees(space, start, num_draws, inverse_mass):
    kernel = ChEESKernel(step_size=0.9, trajectory_length=3.0, inverse_mass=inverse_mass)
    chains = run_fixed_kernel(space, start, num_draws, kernel)
    assert int(chains.stats["n_steps"].max()) > 1  # multi-step jittered trajectories
    return chains


def _fixed_nuts(space, start, num_draws, inverse_mass):
    chains = run_fixed_nuts(space, start, num_draws, step_size=0.6, inverse_mass=inverse_mass)
    assert int(chains.stats["tree_depth"].max()) >= 3  # trees that double several times
    return chains


@pytest.mark.parametrize("kernel", [_fixed_chees, _fixed_nuts], ids=["chees", "nuts"])
def test_the_fixed_kernel_leaves_the_target_invariant(kernel):
    """16,384 chains started at exact draws stay exact draws after three transitions with a
    mismatched mass and a large step. On each marginal and on a mixed direction, a χ² test
    of the distribution and a z-test of the standardised second moment (whose standard
    error is sqrt(2 / n) for exact draws) each fail a correct kernel with probability 1e-3;
    the second-moment test catches a sampler that always moves to its newest subtree."""
    torch.manual_seed(0)
    space = FlatPotential(ThetaTarget(_GAUSSIAN))
    num_chains = 16384
    chains = kernel(space, _GAUSSIAN.sample((num_chains,)), 3, torch.tensor([2.0, 0.5], dtype=_F64))
    assert 0.2 < float(chains.stats["acceptance_rate"].mean()) < 0.95  # the correction does work
    final = chains.states[-1]
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=_F64)
    critical = stats.norm.isf(0.5e-3)  # two-sided, 1e-3
    for direction in directions:
        projected = dist.Normal(direction @ _GAUSSIAN.mean,
                                (direction @ _GAUSSIAN.covariance_matrix @ direction).sqrt())
        values = final @ direction
        assert _chi_square_p_value(values, projected) > 1e-3, direction
        second_moment = float((((values - projected.loc) / projected.scale) ** 2).mean())
        assert abs(second_moment - 1) <= critical * math.sqrt(2 / num_chains), (direction, second_moment)


def test_nuts_checkpoints_are_every_balanced_subtree_ending_at_a_leaf():
    """Leaf n of a subtree closes the balanced sub-subtrees of 2, 4, ... leaves that end at
    it; each starts at an even leaf whose momentum sits at a checkpoint no leaf in between
    overwrote. checkpoint_range must name exactly those checkpoints (by brute force)."""
    for leaf in range(256):
        starts = [leaf + 1 - size for size in (2 ** k for k in range(1, 10)) if (leaf + 1) % size == 0]
        expected = set()
        for start in starts:
            slot = checkpoint_range(start)[1]
            assert start % 2 == 0 and all(checkpoint_range(between)[1] != slot
                                          for between in range(start + 2, leaf + 1, 2))
            expected.add(slot)
        low, high = checkpoint_range(leaf)
        assert set(range(low, high + 1)) == expected, leaf


@pytest.mark.parametrize("method", [ChEES(), LockstepNUTS()], ids=["chees", "nuts_lockstep"])
def test_lockstep_samplers_recover_a_correlated_gaussian(method):
    torch.manual_seed(0)
    result = method.run(ThetaTarget(_GAUSSIAN), 1024, seed=0)
    draws = result.draws["theta"]
    ess = result.diagnostics.ess_min
    sd = _GAUSSIAN.covariance_matrix.diagonal().sqrt()
    assert ((draws.mean(0) - _GAUSSIAN.mean).abs() / sd <= Z / math.sqrt(ess)).all()
    assert result.diagnostics.rhat_max < 1.05 and result.diagnostics.divergences == 0
    assert result.cost.grad_evals > method.num_chains * (200 + 1024 // method.num_chains)  # every step counted


@pytest.mark.parametrize("method", ["chees", "nuts_lockstep"])
@pytest.mark.parametrize("name", ["factor_analysis", "ppca"])
def test_lockstep_samplers_approach_the_exact_latent_factor_posterior(name, method):
    model = zoo.get_model(name)
    data = model.simulate(num_datapoints=50, seed=0).data
    row = score(run_inference(model, data, method, budget=1024, seed=0, target="latent"),
                model.reference(data, "latent"))
    assert row["mean_error"] <= Z * math.sqrt(1 / row["ess_min"])
    assert row["rhat_max"] < 1.05 and row["divergences"] == 0


@pytest.mark.parametrize("settings,match", [
    (dict(num_chains=30, num_superchains=8), "multiple of num_superchains"),
    (dict(num_chains=8, num_superchains=1), "at least 2 superchains"),
    (dict(num_warmup=-1), "num_warmup must be a non-negative integer"),
])
@pytest.mark.parametrize("method", [ChEES, LockstepNUTS])
def test_bad_settings_are_refused(method, settings, match):
    with pytest.raises(ValueError, match=match):
        method(**settings)


def test_a_budget_below_one_draw_per_chain_is_refused():
    model = zoo.get_model("ppca")
    with pytest.raises(ValueError, match="less than one draw per chain for 32 chains; use at least 32"):
        run_inference(model, model.simulate(10, seed=0).data, "chees", budget=16, target="latent")


def test_a_compiled_potential_agrees_with_eager_torch_and_is_used():
    space = FlatPotential(ThetaTarget(_GAUSSIAN))
    points = torch.randn(16, 2, dtype=_F64)
    eager = space.batch_potential_and_grad(points)
    assert space.compile(points) is None
    assert space._batch_log_density is not space._eager_batch_log_density
    with pyro.validation_enabled(False):  # as the samplers call it, and as it was compiled
        compiled = space.batch_potential_and_grad(points)
    for fast, slow in zip(compiled, eager):
        torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)
    assert space.counted.grad_evals == 32  # compiling and its check are not counted


@pytest.mark.parametrize("broken,reason", [
    (lambda fn: (lambda flat: fn(flat) + 1e-6), "the compiled density differs from eager torch by 1"),
    (lambda fn: (lambda flat: (_ for _ in ()).throw(RuntimeError("no C++ compiler\nmore"))),
     "torch.compile failed: RuntimeError: no C++ compiler"),
])
def test_a_potential_that_does_not_compile_or_disagrees_stays_eager_and_says_why(monkeypatch, broken, reason):
    monkeypatch.setattr(torch, "compile", lambda fn, **_: broken(fn))
    space = FlatPotential(ThetaTarget(_GAUSSIAN))
    assert space.compile(torch.randn(4, 2, dtype=_F64)).startswith(reason)
    assert space._batch_log_density == space._eager_batch_log_density
