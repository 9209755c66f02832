"""Extending the zoo and the harness, as CONTRIBUTING.md and ARCHITECTURE.md say: a model is
its own file plus one registration, a method is its own file plus one line, and stored
references survive a new hyperparameter. CONTRIBUTING.md's two templates are executed
exactly as it prints them."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import zoo
from inference_comparisons import available_methods, compare, get_method
from inference_comparisons.methods import register_method, unregister_method
from inference_comparisons.sweep import load_data, plan
from inference_comparisons.testing import check_method, check_model
from zoo.gmm import GaussianMixture

CONTRIBUTING = Path(__file__).resolve().parent.parent / "CONTRIBUTING.md"


def _template(path: str) -> types.ModuleType:
    """The module CONTRIBUTING.md prints as ``path``, executed as printed."""
    match = re.search(rf'```python title="{re.escape(path)}"\n(.*?)\n```', CONTRIBUTING.read_text(), flags=re.S)
    assert match, f"CONTRIBUTING.md has no template {path}"
    name = Path(path).stem
    module = types.ModuleType(name)
    sys.modules[name] = module  # classes find their module (their docstring's process)
    exec(compile(match.group(1), f"CONTRIBUTING.md:{path}", "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def normal_means():
    """The model template's module, and its model registered."""
    module = _template("zoo/normal_means.py")
    zoo.register_model(module.NormalMeans)
    yield module
    zoo.unregister_model("normal_means")
    del sys.modules["normal_means"]


def test_the_worked_example_model_conforms(normal_means):
    model = zoo.get_model("normal_means")
    assert "normal_means" in zoo.available_models()
    check_model(model)  # every target of the worked example is exact, so its references are checked too


def test_the_worked_example_exact_answers_match_quadrature(normal_means):
    """Exact answers are checked against brute force: a fine grid over mu, and each z_n."""
    model = zoo.get_model("normal_means")
    data = model.simulate(20, seed=1).data
    grid = torch.linspace(-15, 15, 60_001, dtype=torch.float64)
    width = float(grid[1] - grid[0])
    posterior = model.target(data, "posterior")
    log_joint = posterior.log_density({"mu": grid})
    log_evidence = float(log_joint.logsumexp(0)) + math.log(width)
    weights = (log_joint - log_joint.logsumexp(0)).exp()
    mean = float((weights * grid).sum())
    reference = posterior.exact()
    assert reference.log_evidence == pytest.approx(log_evidence, abs=1e-8)
    assert float(reference.moments["mu"].mean) == pytest.approx(mean, abs=1e-8)
    latent = model.target(data, "latent")
    per_point = latent.pointwise_log_likelihood({"z": grid[:, None].expand(-1, len(data))})
    log_joint = per_point + torch.distributions.Normal(latent.params["mu"], model.tau).log_prob(grid)[:, None]
    weights = (log_joint - log_joint.logsumexp(0)).exp()
    torch.testing.assert_close(latent.exact().moments["z"].mean, (weights * grid[:, None]).sum(0), atol=1e-8, rtol=0)
    assert latent.exact().log_evidence == pytest.approx(float((log_joint.logsumexp(0) + math.log(width)).sum()),
                                                        abs=1e-8)


def test_the_worked_example_runs_in_a_sweep(normal_means, tmp_path):
    table = compare(models=["normal_means"], methods=["exact", "nuts", "is_prior"], budgets="quick",
                    ladders={"nuts": (20,), "is_prior": (200,)}, out=tmp_path, scheduler="inprocess")
    assert set(table.status) == {"ok"} and len(table) == 6
    assert (table[table.method == "exact"].log_evidence_error == 0).all()
    assert "## normal_means / posterior" in (tmp_path / "report.md").read_text()


def test_a_new_method_is_picked_up_by_the_registry_and_the_checks():
    register_method(_template("inference_comparisons/methods/prior_resampled.py").PriorResampled())
    try:
        assert "prior_resampled" in available_methods()
        assert {c.budget for c in plan(models=["gmm"], methods=["prior_resampled"], budgets="default")} == {100, 1000}
        check_method(get_method("prior_resampled"))
    finally:
        unregister_method("prior_resampled")
    assert "prior_resampled" not in available_methods()


@dataclasses.dataclass(frozen=True)
class MixtureWithScalePriorFamily(GaussianMixture):
    """The mixture with a hyperparameter added after its reference was stored, whose default
    keeps the old prior (as ``scale_prior`` was added to the Gaussian components; this
    subclass's entry adds to theirs)."""

    scale_prior_family: str = "lognormal"

    backward_compatible = {"scale_prior_family": "lognormal"}


def test_a_new_hyperparameter_with_a_backward_compatible_default_keeps_the_stored_reference():
    default = zoo.get_model("gmm")
    data = load_data(default, "simulated")
    stored = default.reference(data, "posterior")
    extended = MixtureWithScalePriorFamily()
    assert extended.reference_key("posterior") == default.reference_key("posterior")
    assert extended.reference(data, "posterior").log_evidence == stored.log_evidence
    with pytest.raises(LookupError, match="no stored reference"):
        MixtureWithScalePriorFamily(scale_prior_family="half_normal").reference(data, "posterior")


def test_true_parameters_do_not_key_a_posterior_reference_but_priors_do():
    """The posterior depends on the data and the prior, not on the values the data were
    simulated from: a model with other true weights finds the stored reference for the same
    data; another prior scale does not."""
    data = load_data(zoo.get_model("gmm"), "simulated")
    stored = zoo.get_model("gmm").reference(data, "posterior")
    other_truth = zoo.get_model("gmm", weights=(0.2, 0.5, 0.3))
    assert other_truth.reference(data, "posterior").log_evidence == stored.log_evidence
    with pytest.raises(LookupError):
        zoo.get_model("gmm", mean_prior_scale=4.0).reference(data, "posterior")
