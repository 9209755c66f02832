"""ArviZ diagnostics for every (model, target, method) the registries offer.

Parametrised over ``zoo.available_models()``, ``available_methods()`` and each model's
targets, keeping only the combinations a method can run (``not_applicable`` is None), so a
newly registered model or method is covered the moment it exists. Budgets and data are tiny:
these tests check plumbing (groups, files, plots), not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import zoo  # noqa: E402
from inference_comparisons._arviz import arviz  # noqa: E402
from inference_comparisons.diagnostics import (  # noqa: E402
    diagnose,
    diagnostics_columns,
    load_inference_data,
    save_inference_data,
    to_inference_data,
)
from inference_comparisons.methods import available_methods, get_method  # noqa: E402
from inference_comparisons.base import ResultKind  # noqa: E402
from inference_comparisons.estimators.weights import systematic_resample  # noqa: E402
from inference_comparisons.runner import run_inference  # noqa: E402

NUM_DATAPOINTS = 30


def _cells() -> list[tuple[str, str, str]]:
    cells = []
    for model_name in zoo.available_models():
        model = zoo.get_model(model_name)
        data = model.simulate(num_datapoints=NUM_DATAPOINTS, seed=0).data
        for target in model.info.targets:
            problem = model.target(data, target)
            for method in available_methods():
                if get_method(method).not_applicable(problem) is None:
                    cells.append((model_name, target, method))
    return cells


CELLS = _cells()


def _assert_same(original, reopened) -> None:
    assert set(reopened.groups()) == set(original.groups())
    assert set(reopened.attrs) == set(original.attrs)
    for key, value in original.attrs.items():
        again = reopened.attrs[key]
        if isinstance(value, float) and np.isnan(value):
            assert np.isnan(again), key
        else:
            assert again == value and type(again) is not bool, key
    for group in original.groups():
        before, after = getattr(original, group), getattr(reopened, group)
        assert set(after.data_vars) == set(before.data_vars), group
        for name in before.data_vars:
            assert after[name].dims == before[name].dims, (group, name)
            np.testing.assert_array_equal(after[name].values, before[name].values)


@pytest.mark.parametrize(("model_name", "target", "method"), CELLS, ids=["-".join(c) for c in CELLS])
def test_inference_data_round_trip_and_diagnostics(model_name: str, target: str, method: str,
                                                    tmp_path: Path) -> None:
    az = arviz()
    inference = get_method(method).for_smoke_test()
    model = zoo.get_model(model_name)
    data = model.simulate(num_datapoints=NUM_DATAPOINTS, seed=0).data
    problem = model.target(data, target)
    result = run_inference(model, data, inference, inference.smoke_budget, seed=0, target=target)

    idata = to_inference_data(result, problem, data, max_draws=100, num_prior_draws=20)
    path = save_inference_data(idata, tmp_path / "cell.nc")
    reopened = load_inference_data(path)
    _assert_same(idata, reopened)
    assert reopened.attrs["method"] == method and reopened.attrs["target"] == target
    assert "observed_data" in reopened.groups()

    if result.kind is ResultKind.EXACT:  # exact draws, and the closed form's evidence
        assert reopened.attrs["log_evidence"] == pytest.approx(result.log_evidence)
        assert reopened.attrs["posterior_kind"].startswith("independent draws (the exact posterior)")

    for group in ("posterior", "log_likelihood", "prior"):
        assert group in reopened.groups()
    num_draws = reopened.posterior.sizes["draw"] * reopened.posterior.sizes["chain"]
    observed = reopened.attrs["observed_site"]
    assert reopened.log_likelihood[observed].shape[-1] == data.shape[0]
    assert reopened.log_likelihood[observed].dims[-1] == reopened.attrs["observation_dim"]
    for group in ("posterior_predictive", "prior_predictive"):  # simulated, not just a note
        assert group in reopened.groups(), reopened.attrs.get(group)
        assert getattr(reopened, group)[observed].shape[2:] == reopened.observed_data[observed].shape
    assert set(reopened.posterior.data_vars) == set(problem.latent_sites)
    assert num_draws <= 200

    columns = diagnostics_columns(reopened)
    point = result.num_draws == 1  # map: no spread to summarise, no sample for PSIS-LOO
    if point:
        assert np.isnan(columns["elpd_loo"]) and result.note
    else:
        summary = az.summary(reopened, kind="stats")
        assert len(summary) > 0
        assert np.isfinite(columns["elpd_loo"])
        assert 0 <= columns["num_khat_above_0_7"] <= data.shape[0]

    if result.kind is ResultKind.IMPORTANCE:
        assert "log_weight" in reopened.sample_stats
        assert "log_weight" in reopened.importance_particles
        kept = torch.as_tensor(reopened.sample_stats["log_weight"].values.ravel())
        assert torch.isin(kept, result.log_weights.to(kept.dtype)).all()
    elif result.kind is ResultKind.MCMC:
        stats = reopened.sample_stats
        for name in ("energy", "lp", "step_size", "n_steps", "acceptance_rate", "diverging"):
            assert name in stats, name
        assert stats["energy"].shape == (result.num_chains, num_draws // result.num_chains)
        assert int(stats["diverging"].values.sum()) == int(result.diagnostics.divergences)
        assert ((stats["acceptance_rate"] >= -1e-9) & (stats["acceptance_rate"] <= 1 + 1e-9)).all()
        assert (stats["n_steps"] >= 1).all()
        assert np.isfinite(columns["bfmi_min"])
    if result.losses:  # a fitted guide: its loss trace, and (as the answer) its k̂ as a proposal
        assert reopened.sample_stats["loss"].shape == (len(result.losses),)
        assert result.kind is ResultKind.IMPORTANCE or point or np.isfinite(reopened.attrs["khat"])

    text = diagnose(path, tmp_path / "plots")
    assert "elpd_loo" in text
    if point:
        assert "a point estimate" in text and not (tmp_path / "plots").exists()
        return
    written = {p.name for p in (tmp_path / "plots").glob("*.png")}
    expected = {"trace.png", "rank.png", "posterior.png", "khat.png"}
    if "sample_stats" in reopened.groups() and "energy" in reopened.sample_stats:
        expected.add("energy.png")
    assert expected <= written


def test_diagnose_missing_file_raises_value_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.nc"
    with pytest.raises(ValueError, match="nope.nc"):
        diagnose(missing, tmp_path / "plots")


def test_diagnose_corrupt_file_raises_value_error_naming_it(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(b"this is not a netCDF file\x00\x01")
    with pytest.raises(ValueError, match="corrupt.nc"):
        diagnose(corrupt, tmp_path / "plots")
    with pytest.raises(ValueError, match="corrupt.nc"):
        load_inference_data(corrupt)


def test_systematic_resample_is_exact_for_uniform_and_degenerate_weights() -> None:
    generator = torch.Generator().manual_seed(0)
    uniform = systematic_resample(torch.zeros(8), 8, generator)
    assert sorted(uniform.tolist()) == list(range(8))
    degenerate = systematic_resample(torch.tensor([-1e9, 0.0, -1e9]), 5, generator)
    assert degenerate.tolist() == [1] * 5


def test_to_inference_data_is_seeded_and_leaves_the_global_random_state_alone() -> None:
    model = zoo.get_model(zoo.available_models()[0])
    data = model.simulate(num_datapoints=NUM_DATAPOINTS, seed=0).data
    target = model.info.targets[0]
    problem = model.target(data, target)
    method = next(m for m in available_methods() if get_method(m).budget_unit == "particles"
                  and get_method(m).not_applicable(problem) is None and get_method(m).for_smoke_test() is get_method(m))
    result = run_inference(model, data, method, 100, seed=0, target=target)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = to_inference_data(result, problem, data, num_prior_draws=20)
    assert torch.equal(torch.rand(3), expected)
    second = to_inference_data(result, problem, data, num_prior_draws=20)
    for group in ("posterior", "posterior_predictive", "prior"):
        for name in getattr(first, group).data_vars:
            np.testing.assert_array_equal(getattr(first, group)[name].values, getattr(second, group)[name].values)
