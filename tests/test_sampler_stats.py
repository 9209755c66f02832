"""The recording HMC/NUTS kernels: same sampler, and statistics that mean what they say."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import HMC, MCMC, NUTS

from inference_comparisons.estimators.sampler_stats import RecordingHMC, RecordingNUTS, concatenate_sample_stats

NUM_WARMUP, NUM_SAMPLES = 20, 20


def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """A correlated 2-D Gaussian, -log density up to a constant."""
    x = params["x"]
    precision = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=x.dtype)
    return 0.5 * x @ precision @ x


def _run(kernel_class: type, seed: int = 0, **kwargs) -> tuple[object, torch.Tensor, dict]:
    """Run one chain; also return the kernel's own running summaries at the last draw
    (MCMC.run() ends with kernel.cleanup(), which resets them)."""
    pyro.set_rng_seed(seed)
    kernel = kernel_class(potential_fn=potential, adapt_step_size=True, adapt_mass_matrix=True, **kwargs)
    last: dict = {}

    def hook(kernel, params, stage, i) -> None:
        last.update(mean_accept_prob=kernel._mean_accept_prob, divergences=len(kernel._divergences),
                    step_size=kernel.step_size, num_steps=kernel.num_steps)

    mcmc = MCMC(kernel, num_samples=NUM_SAMPLES, warmup_steps=NUM_WARMUP, hook_fn=hook,
                initial_params={"x": torch.tensor([1.0, -1.0], dtype=torch.float64)}, disable_progbar=True)
    mcmc.run()
    return kernel, mcmc.get_samples()["x"], last


@pytest.mark.parametrize(("plain", "recording", "kwargs"), [
    (NUTS, RecordingNUTS, {}),
    (HMC, RecordingHMC, {"trajectory_length": 1.0}),
], ids=["nuts", "hmc"])
def test_recording_kernel_leaves_the_sampler_unchanged_and_records_each_draw(plain, recording, kwargs) -> None:
    _, expected, _ = _run(plain, **kwargs)
    kernel, draws, last = _run(recording, **kwargs)
    torch.testing.assert_close(draws, expected, rtol=0, atol=0)

    stats = kernel.sample_stats()
    for name in ("diverging", "step_size", "n_steps", "acceptance_rate", "lp", "energy"):
        assert stats[name].shape == (NUM_SAMPLES,), name
    # lp is minus the potential at the returned draw.
    lp = torch.stack([-potential({"x": x}) for x in draws])
    torch.testing.assert_close(stats["lp"], lp)
    # Per-draw acceptance probabilities average to Pyro's running mean.
    assert 0 <= float(stats["acceptance_rate"].min()) and float(stats["acceptance_rate"].max()) <= 1 + 1e-12
    assert float(stats["acceptance_rate"].mean()) == pytest.approx(last["mean_accept_prob"], abs=1e-9)
    assert int(stats["diverging"].sum()) == last["divergences"]
    # Energy is the Hamiltonian after the momentum refresh: at least the potential there.
    assert (stats["energy"][1:] >= -stats["lp"][:-1] - 1e-9).all()
    assert (stats["step_size"] == last["step_size"]).all()  # adaptation is over after warmup
    if recording is RecordingNUTS:
        depth, steps = stats["tree_depth"], stats["n_steps"]
        assert ((2 ** (depth - 1) <= steps) & (steps <= 2 ** depth - 1)).all()
    else:
        assert (stats["n_steps"] == last["num_steps"]).all()


def test_concatenate_sample_stats_keeps_chain_order_and_common_names() -> None:
    first = {"lp": torch.tensor([1.0, 2.0]), "tree_depth": torch.tensor([1, 2])}
    second = {"lp": torch.tensor([3.0, 4.0])}
    joined = concatenate_sample_stats([first, second])
    assert list(joined) == ["lp"]
    assert joined["lp"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert concatenate_sample_stats([]) == {}
