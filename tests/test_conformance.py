"""Conformance tests, parametrised over the registries: a model or method is tested the
moment it is registered (no hand-kept lists). The checks themselves are in conformance.py."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo import references
from conftest import tiny_data
from inference_comparisons.testing import (check_collapsed_model_sums_out_the_enumerated_sites, check_model,
                         check_log_density_at_probabilities_is_the_expectation, check_log_density_matches_pyro,
                         check_method_declarations, check_method_on_target, check_model_and_guide_sites_agree,
                         check_model_declarations, check_one_svi_step_raises_no_warning,
                         check_reference_is_finite_with_declared_shapes, check_simulate_is_reproducible,
                         check_target_declarations, enumerates)
from inference_comparisons import available_methods, get_method, run_inference

MODELS = zoo.available_models()
MODEL_TARGETS = [(m, t) for m in MODELS for t in zoo.get_model(m).info.targets]
CELLS = [(m, t, meth) for m, t in MODEL_TARGETS for meth in available_methods()]


def _target(name: str, target: str) -> zoo.Target:
    return zoo.get_model(name).target(tiny_data(name), target)


def _default_data(name: str) -> torch.Tensor:
    return zoo.get_model(name).simulate(num_datapoints=200, seed=0).data  # the sweep's default data


@pytest.mark.parametrize("name", MODELS)
def test_model_declarations(name):
    check_model_declarations(zoo.get_model(name))


@pytest.mark.parametrize("name", MODELS)
def test_model_and_guide_sites_agree(name):
    check_model_and_guide_sites_agree(zoo.get_model(name), tiny_data(name))


@pytest.mark.parametrize("name", MODELS)
def test_simulate_is_reproducible(name):
    check_simulate_is_reproducible(zoo.get_model(name))


@pytest.mark.parametrize("name,target", MODEL_TARGETS)
def test_target_declarations(name, target):
    check_target_declarations(_target(name, target), target)


@pytest.mark.parametrize("name,target", MODEL_TARGETS)
def test_log_density_matches_pyro(name, target):
    check_log_density_matches_pyro(_target(name, target))


@pytest.mark.parametrize("name,target", [(m, t) for m, t in MODEL_TARGETS if enumerates(_target(m, t))])
def test_collapsed_model_sums_out_the_enumerated_sites(name, target):
    check_collapsed_model_sums_out_the_enumerated_sites(_target(name, target))


@pytest.mark.parametrize("name,target", [(m, t) for m, t in MODEL_TARGETS if _target(m, t).discrete_sites])
def test_log_density_at_probabilities_is_the_expectation(name, target):
    check_log_density_at_probabilities_is_the_expectation(_target(name, target))


# Exact references, and every stored gold standard. A posterior target without a stored
# reference is reported by the sweep itself (a failed row naming the build command).
WITH_REFERENCE = [(m, t) for m, t in MODEL_TARGETS
                  if _target(m, t).has_exact
                  or references.load(zoo.get_model(m), t, zoo.get_model(m).validate(_default_data(m))) is not None]


@pytest.mark.parametrize("name,target", WITH_REFERENCE)
def test_reference_is_finite_with_declared_shapes(name, target):
    check_reference_is_finite_with_declared_shapes(zoo.get_model(name), _default_data(name), target)


@pytest.mark.parametrize("name", MODELS)
def test_one_svi_step_raises_no_warning(name):
    check_one_svi_step_raises_no_warning(zoo.get_model(name), tiny_data(name))


@pytest.mark.parametrize("method", available_methods())
def test_method_declarations(method):
    check_method_declarations(get_method(method))


@pytest.mark.parametrize("name,target,method", CELLS)
def test_every_method_gives_finite_results_at_its_smoke_budget(name, target, method):
    check_method_on_target(get_method(method), zoo.get_model(name), tiny_data(name), target)


# A dataset that brings its own configuration (posteriordb's posteriors, the VAE's checkpoints)
# is another model: the same checks run on it, with its own data, and each of its targets has
# a reference, exact or stored.
CONFIGURED = [(m, dataset) for m in MODELS for dataset in zoo.model_class(m).info.dataset_configs]


def _configured(name: str, dataset: str) -> tuple[zoo.ZooModel, torch.Tensor]:
    model = zoo.get_model(name).for_dataset(dataset)
    return model, model.load_dataset(dataset)


@pytest.mark.parametrize("name,dataset", CONFIGURED)
def test_a_dataset_configuration_passes_the_model_checks(name, dataset):
    model, data = _configured(name, dataset)
    check_model(model, data[:40], methods=False)  # the configuration's code paths, on a slice
    for target in model.info.targets:  # a stored reference is of the whole dataset; an exact one of any data
        check_reference_is_finite_with_declared_shapes(
            model, data[:40] if model.target(data[:40], target).has_exact else data, target)


# Methods run on the configurations that change a prior (posteriordb's), whose code paths the
# default models' cells do not reach; the VAE's configurations change only the trained
# weights, whose code paths the default VAE's cells above already run.
PRIOR_CONFIGURED = [(m, d) for m, d in CONFIGURED if "posterior" in zoo.model_class(m).info.targets]


@pytest.mark.parametrize("name,dataset,method", [(m, d, meth) for m, d in PRIOR_CONFIGURED
                                                 for meth in available_methods()])
def test_every_method_runs_on_a_dataset_configuration(name, dataset, method):
    """On the dataset's first 20 points: the configuration's code paths (its priors), at the
    smoke budget."""
    model, data = _configured(name, dataset)
    for target in model.info.targets:
        check_method_on_target(get_method(method), model, data[:20], target)


def test_importance_sampling_runs_in_vectorised_passes(monkeypatch):
    """10,000 particles go through the model in traced executions of ``PARTICLE_CHUNK``
    particles each, never one at a time."""
    import inference_comparisons.estimators.particles as particles

    calls = []
    original = particles.vectorized_importance_weights
    monkeypatch.setattr(particles, "vectorized_importance_weights",
                        lambda *a, **k: calls.append(k["num_samples"]) or original(*a, **k))
    model = zoo.get_model("gmm")
    run_inference(model, model.simulate(200, 0).data, "is_prior", budget=10_000, seed=0)
    assert calls == [particles.PARTICLE_CHUNK] * (10_000 // particles.PARTICLE_CHUNK)
    assert particles.PARTICLE_CHUNK >= 1000

