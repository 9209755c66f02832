"""Conformance tests, parametrised over the registries: a model or method is tested the
moment it is registered (no hand-kept lists)."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.subsample_messenger import _Subsample

import zoo
from zoo import references
from conftest import TINY_BUDGETS, tiny_data
from inference_comparisons import NotApplicable, available_methods, get_method, run_inference
from inference_comparisons.methods.mcmc import fast_potential
from inference_comparisons.particles import importance_log_weights, log_joint, prior_proposal
from pyro.infer.mcmc.util import initialize_model

MODEL_TARGETS = [(m, t) for m in zoo.available_models() for t in zoo.get_model(m).info.targets]
CELLS = [(m, t, meth) for m, t in MODEL_TARGETS for meth in available_methods()]


def _first_target(model: zoo.ZooModel) -> str:
    """``posterior`` where the model poses it; otherwise its first target (the VAE's decoder
    weights have no prior, so it poses ``latent`` only)."""
    return "posterior" if "posterior" in model.info.targets else model.info.targets[0]


def _prior_draws(problem: zoo.Target, num: int = 5) -> dict[str, torch.Tensor]:
    _, draws = importance_log_weights(problem.collapsed_model, prior_proposal(problem.collapsed_model), num,
                                      problem.max_plate_nesting, problem.latent_sites)
    return draws


@pytest.mark.parametrize("name", zoo.available_models())
def test_model_and_guide_sites_agree(name):
    model = zoo.get_model(name)
    data = tiny_data(name)
    guide_trace = poutine.trace(model.guide).get_trace(data)
    # A plate in the guide records a subsample site of its own: not a latent.
    guide_sites = {s for s, n in guide_trace.nodes.items()
                   if n["type"] == "sample" and not isinstance(n["fn"], _Subsample)}
    assert guide_sites == set(model.target(data, _first_target(model)).latent_sites)
    model_trace = poutine.trace(poutine.replay(model.model, guide_trace)).get_trace(data)
    model_latents = {s for s, n in model_trace.nodes.items() if n["type"] == "sample" and not n["is_observed"]}
    assert guide_sites <= model_latents


@pytest.mark.parametrize("name", zoo.available_models())
def test_simulate_is_reproducible(name):
    model = zoo.get_model(name)
    first, second = model.simulate(num_datapoints=20, seed=3), model.simulate(num_datapoints=20, seed=3)
    assert torch.equal(first.data, second.data)
    assert not torch.equal(first.data, model.simulate(num_datapoints=20, seed=4).data)
    # true_params hold the globals in their natural form (FA reports W, not its sampling
    # sites; the VAE's decoder lives in its checkpoint), as finite tensors; true_latents hold
    # the simulated locals.
    assert all(torch.isfinite(v).all() for v in first.true_params.values())
    assert first.true_latents and all(len(v) == 20 for v in first.true_latents.values())


@pytest.mark.parametrize("name,target", MODEL_TARGETS)
def test_log_density_matches_pyro(name, target):
    """The plain-torch density (NUTS's fast path) equals the collapsed Pyro model's, and
    the fast potential equals Pyro's own potential in unconstrained space."""
    problem = zoo.get_model(name).target(tiny_data(name), target)
    draws = _prior_draws(problem)
    expected = log_joint(problem.collapsed_model, draws, problem.max_plate_nesting)
    torch.testing.assert_close(problem.log_density(draws), expected, rtol=1e-10, atol=1e-8)
    if problem.continuous_sites and not problem.discrete_sites:
        init, potential, transforms, _ = initialize_model(problem.collapsed_model,
                                                          max_plate_nesting=problem.max_plate_nesting)
        fast = fast_potential(problem, {s: transforms[s].inv for s in problem.continuous_sites})
        torch.testing.assert_close(fast(init), potential(init), rtol=1e-10, atol=1e-8)


def _enumerates(name: str) -> bool:
    model = zoo.get_model(name)
    problem = model.target(tiny_data(name), _first_target(model))
    trace = poutine.trace(problem.model).get_trace()
    return any(n["type"] == "sample" and n["infer"].get("enumerate") for n in trace.nodes.values())


@pytest.mark.parametrize("name", [n for n in zoo.available_models() if _enumerates(n)])
def test_collapsed_model_sums_out_the_enumerated_sites(name):
    """log p(x, theta) from the enumerated model (TraceEnum_ELBO with the globals observed and
    an empty guide) equals the collapsed model's."""
    model = zoo.get_model(name)
    problem = model.target(tiny_data(name), _first_target(model))
    draws = _prior_draws(problem, 1)
    single = {k: v[0] for k, v in draws.items()}
    conditioned = poutine.condition(problem.model, single)
    # Nothing may be enumerated (the VAE): then this is the plain log joint, and the warning
    # that TraceEnum_ELBO found nothing to enumerate is beside the point.
    elbo = TraceEnum_ELBO(max_plate_nesting=problem.max_plate_nesting, strict_enumeration_warning=False)
    enumerated = -elbo.loss(conditioned, lambda: None)
    assert enumerated == pytest.approx(float(problem.log_density(draws)[0]), rel=1e-10, abs=1e-8)


def _default_data(name: str) -> torch.Tensor:
    return zoo.get_model(name).simulate(num_datapoints=200, seed=0).data  # the sweep's default data


# Exact references, and every stored gold standard. A posterior target without a stored
# reference is reported by the sweep itself (a failed row naming the build command).
WITH_REFERENCE = [(m, t) for m, t in MODEL_TARGETS
                  if zoo.get_model(m).target(tiny_data(m), t).exact is not None
                  or references.load(zoo.get_model(m), t, zoo.get_model(m).validate(_default_data(m))) is not None]


@pytest.mark.parametrize("name,target", WITH_REFERENCE)
def test_reference_is_finite_with_declared_shapes(name, target):
    model = zoo.get_model(name)
    data = _default_data(name)
    problem = model.target(data, target)
    reference = model.reference(data, target)
    assert math.isfinite(reference.log_evidence) and reference.log_evidence_se >= 0
    assert reference.exact == (problem.exact is not None)
    expected = problem.quantities(_prior_draws(problem, 2))
    assert set(reference.moments) == set(expected)
    for key, moments in reference.moments.items():
        for part in moments:
            assert part.shape == expected[key].shape[1:] and torch.isfinite(part).all()
    per_draw = problem.local_marginals(_prior_draws(problem, 2))
    assert set(reference.local_marginals) == set(per_draw)
    for key, marginals in reference.local_marginals.items():
        assert marginals.shape == per_draw[key].shape[1:]
        torch.testing.assert_close(marginals.sum(-1), torch.ones(marginals.shape[:-1], dtype=torch.float64))
    assert reference.provenance


@pytest.mark.parametrize("name", zoo.available_models())
def test_one_svi_step_raises_no_warning(name):
    # Warnings are errors in this suite, so any warning fails the step.
    model = zoo.get_model(name)
    result = run_inference(model, tiny_data(name), "svi", budget=1, seed=0, target=_first_target(model))
    assert math.isfinite(result.extras["losses"][0])


@pytest.mark.parametrize("name,target,method", CELLS)
def test_every_method_gives_finite_results_at_a_tiny_budget(name, target, method):
    model = zoo.get_model(name)
    data = tiny_data(name)
    reason = get_method(method).not_applicable(model.target(data, target))
    if reason is not None:
        with pytest.raises(NotApplicable):
            run_inference(model, data, method, budget=TINY_BUDGETS[method], seed=0, target=target)
        return
    result = run_inference(model, data, method, budget=TINY_BUDGETS[method], seed=0, target=target)
    assert result.cost.wall_s > 0 and result.cost.density_evals > 0
    for moments in result.moments.values():
        assert all(torch.isfinite(part).all() for part in moments[:2])
    for marginals in result.local_marginals.values():
        torch.testing.assert_close(marginals.sum(-1), torch.ones(marginals.shape[:-1], dtype=torch.float64))
    if method != "nuts" and method != "hmc":
        assert math.isfinite(result.log_evidence)


def test_importance_sampling_is_one_vectorised_pass(monkeypatch):
    """10,000 particles go through the model in a single traced execution."""
    import inference_comparisons.particles as particles

    calls = []
    original = particles.vectorized_importance_weights
    monkeypatch.setattr(particles, "vectorized_importance_weights",
                        lambda *a, **k: calls.append(k["num_samples"]) or original(*a, **k))
    model = zoo.get_model("gmm")
    run_inference(model, model.simulate(200, 0).data, "is_prior", budget=10_000, seed=0)
    assert calls == [10_000]


@pytest.mark.parametrize("name,target", [(m, t) for m, t in MODEL_TARGETS
                                         if zoo.get_model(m).target(tiny_data(m), t).discrete_sites])
def test_log_density_at_probabilities_is_the_expectation(name, target):
    """Mean-field SVI relies on log_density(q) = E_{z ~ q}[log p(x, z)] for independent
    categoricals q; checked against a Monte Carlo average within 5 standard errors."""
    problem = zoo.get_model(name).target(tiny_data(name), target)
    draws = _prior_draws(problem, 1)
    generator = torch.Generator().manual_seed(0)
    num_categories = {s: int(pyro.poutine.trace(problem.model).get_trace().nodes[s]["fn"]
                             .enumerate_support(expand=False).numel()) for s in problem.discrete_sites}
    probs = {s: torch.distributions.Dirichlet(torch.ones(num_categories[s], dtype=torch.float64))
             .sample(draws[s].shape) for s in problem.discrete_sites}
    samples = {s: torch.multinomial(p.reshape(-1, p.shape[-1]), 4000, replacement=True, generator=generator)
               .T.reshape((4000,) + p.shape[1:-1]) for s, p in probs.items()}
    monte_carlo = problem.log_density(samples)
    expected = float(problem.log_density(probs)[0])
    assert abs(expected - float(monte_carlo.mean())) < 5 * float(monte_carlo.std()) / math.sqrt(4000)
