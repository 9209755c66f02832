"""The checks every model and method must pass, as plain functions: the project's own
conformance tests run them over the registries, and an author runs them on a new model or
method before registering it (CONTRIBUTING.md, notebook 07)::

    from inference_comparisons.testing import check_method, check_model
    check_model(MyModel())          # every model and target rule, every method at its smoke budget
    check_method(MyMethod())        # its declarations, and a smoke run on every registered model

Each raises ``AssertionError`` (or the error the model itself raises) naming what failed.
They need no test runner (scikit-learn's ``check_estimator`` pattern).
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pyro
import pyro.poutine as poutine
import contextlib
import warnings
from typing import Iterator
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.subsample_messenger import _Subsample
from scipy import stats

import zoo
from inference_comparisons.base import PROFILES, InferenceMethod, NotApplicable
from inference_comparisons.methods import available_methods, get_method
from inference_comparisons.runner import run_inference
from inference_comparisons.estimators.particles import importance_log_weights, log_joint, prior_proposal
from inference_comparisons.estimators.potential import fast_potential

#: Dimension names a target may give the axis of its observations.
OBSERVATION_DIMS = ("datapoint", "time")


@contextlib.contextmanager
def _raises(error: type[BaseException]) -> Iterator[None]:
    """``AssertionError`` unless the block raises ``error`` (pytest.raises, without pytest)."""
    try:
        yield
    except error:
        return
    raise AssertionError(f"expected {error.__name__}, and nothing was raised")


def first_target(model: zoo.ZooModel) -> str:
    """``posterior`` where the model poses it; otherwise its first target (the VAE's decoder
    weights have no prior, so it poses ``latent`` only)."""
    return "posterior" if "posterior" in model.info.targets else model.info.targets[0]


def prior_draws(problem: zoo.Target, num: int = 5) -> dict[str, torch.Tensor]:
    """Draws of the target's latents from its prior, in one vectorised pass (rule 2)."""
    _, draws = importance_log_weights(problem.collapsed_model, prior_proposal(problem.collapsed_model), num,
                                      problem.max_plate_nesting, problem.latent_sites)
    return draws


def enumerates(problem: zoo.Target) -> bool:
    trace = poutine.trace(problem.model).get_trace()
    return any(n["type"] == "sample" and n["infer"].get("enumerate") for n in trace.nodes.values())


# --- models ----------------------------------------------------------------------------
def check_model_declarations(model: zoo.ZooModel) -> None:
    """The generative process is the model's docstring's own text; the true parameter fields
    are fields; every target's reference key is plain JSON."""
    # The model's own docstring: its module's (a file in the zoo) or its class's (a model
    # defined in a notebook or a script).
    own_doc = (inspect.getmodule(type(model)).__doc__ or "") + (type(model).__doc__ or "")
    assert model.info.generative_process.strip()
    for line in model.info.generative_process.splitlines():
        assert line.strip() in own_doc, line
    fields = set(model.config())
    assert set(model.true_parameter_fields) <= fields
    for target in model.info.targets:
        key = model.reference_key(target)
        assert json.loads(json.dumps(key)) == key
        if target == "posterior":
            assert not set(model.true_parameter_fields) & set(key)


def check_model_and_guide_sites_agree(model: zoo.ZooModel, data: torch.Tensor) -> None:
    guide_trace = poutine.trace(model.guide).get_trace(data)
    # A plate in the guide records a subsample site of its own: not a latent.
    guide_sites = {s for s, n in guide_trace.nodes.items()
                   if n["type"] == "sample" and not isinstance(n["fn"], _Subsample)}
    assert guide_sites == set(model.target(data, first_target(model)).latent_sites)
    model_trace = poutine.trace(poutine.replay(model.model, guide_trace)).get_trace(data)
    model_latents = {s for s, n in model_trace.nodes.items() if n["type"] == "sample" and not n["is_observed"]}
    assert guide_sites <= model_latents


def check_simulate_is_reproducible(model: zoo.ZooModel) -> None:
    first, second = model.simulate(num_datapoints=20, seed=3), model.simulate(num_datapoints=20, seed=3)
    assert torch.equal(first.data, second.data)
    assert not torch.equal(first.data, model.simulate(num_datapoints=20, seed=4).data)
    # true_params hold the globals in their natural form (FA reports W, not its sampling
    # sites; the VAE's decoder lives in its checkpoint), as finite tensors; true_latents hold
    # the simulated locals.
    assert all(torch.isfinite(v).all() for v in first.true_params.values())
    assert first.true_latents and all(len(v) == 20 for v in first.true_latents.values())


def check_target_declarations(problem: zoo.Target, target: str) -> None:
    """Rule 5 (names), and the optional parts present exactly where declared."""
    assert problem.name == target and problem.observation_dim in OBSERVATION_DIMS
    assert set(problem.discrete_sites) <= set(problem.latent_sites)
    draws = prior_draws(problem, 2)
    assert set(problem.dims) == set(problem.latent_sites)
    for site, names in problem.dims.items():
        assert len(names) == draws[site].dim() - 1 and len(set(names)) == len(names), (site, names)
    if problem.has_exact:
        check_exact_draws(problem)
    else:
        for part in (problem.exact, lambda: problem.exact_draws(2)):
            with _raises(NotImplementedError):
                part()
    if not problem.has_amortised_guide:
        with _raises(NotImplementedError):
            problem.amortised_guide()


def check_exact_draws(problem: zoo.Target, num_draws: int = 4000) -> None:
    """The exact draws are draws of the exact answer: their quantities' means within 5
    standard errors (sd / sqrt(S)) of the exact moments, and each of their discrete locals'
    counts no further in the exact binomial tail than 5 standard errors are in a normal's
    (two-sided probability 2 Phi(-5) = 5.7e-7). The normal approximation itself fails for
    the probabilities near 0 that 1,000 well-separated points have: at p = 1.5e-5 and 4,000
    draws two hits are 5.5 of its standard errors, yet come once in 550 such entries."""
    reference = problem.exact()
    assert reference.exact
    draws = problem.exact_draws(num_draws)
    assert set(draws) == set(problem.latent_sites)
    assert all(value.shape[0] == num_draws for value in draws.values())
    for name, values in problem.quantities(draws).items():
        exact = reference.moments[name]
        assert ((values.mean(0) - exact.mean).abs() <= 5 * exact.sd / math.sqrt(num_draws) + 1e-12).all(), name
    for name, marginals in problem.local_marginals(draws).items():
        exact = reference.local_marginals[name]
        counts = (marginals.sum(0)).round().numpy()
        probability = exact.clamp(0, 1).numpy()
        tail = np.minimum(stats.binom.cdf(counts, num_draws, probability),
                          stats.binom.sf(counts - 1, num_draws, probability))
        assert (2 * tail >= 2 * stats.norm.sf(5)).all(), (name, float(tail.min()))


def check_log_density_matches_pyro(problem: zoo.Target) -> None:
    """Rules 2 and 4: the plain-torch density (NUTS's fast path) equals the collapsed Pyro
    model's at prior draws evaluated under a particle plate, and the fast potential equals
    Pyro's own potential in unconstrained space."""
    draws = prior_draws(problem)
    expected = log_joint(problem.collapsed_model, draws, problem.max_plate_nesting)
    torch.testing.assert_close(problem.log_density(draws), expected, rtol=1e-10, atol=1e-8)
    if problem.continuous_sites and not problem.discrete_sites:
        init, potential, transforms, _ = initialize_model(problem.collapsed_model,
                                                          max_plate_nesting=problem.max_plate_nesting)
        fast = fast_potential(problem, {s: transforms[s].inv for s in problem.continuous_sites})
        torch.testing.assert_close(fast(init), potential(init), rtol=1e-10, atol=1e-8)


def check_collapsed_model_sums_out_the_enumerated_sites(problem: zoo.Target) -> None:
    """Rule 4: log p(x, theta) from the enumerated model (TraceEnum_ELBO with the globals
    observed and an empty guide) equals the collapsed model's."""
    draws = prior_draws(problem, 1)
    conditioned = poutine.condition(problem.model, {k: v[0] for k, v in draws.items()})
    elbo = TraceEnum_ELBO(max_plate_nesting=problem.max_plate_nesting)
    enumerated = -elbo.loss(conditioned, lambda: None)
    expected = float(problem.log_density(draws)[0])
    assert abs(enumerated - expected) <= max(1e-8, 1e-10 * abs(expected)), (enumerated, expected)


def check_log_density_at_probabilities_is_the_expectation(problem: zoo.Target) -> None:
    """Rule 3: log_density(q) = E_{z ~ q}[log p(x, z)] for independent categoricals q, which
    mean-field SVI relies on; checked against a Monte Carlo average within 5 standard errors."""
    draws = prior_draws(problem, 1)
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


def check_reference_is_finite_with_declared_shapes(model: zoo.ZooModel, data: torch.Tensor, target: str) -> None:
    problem = model.target(data, target)
    reference = model.reference(data, target)
    if reference.provenance.get("source") == "posteriordb":  # Stan's draws come with no evidence
        assert math.isnan(reference.log_evidence) and math.isnan(reference.log_evidence_se)
    else:
        assert math.isfinite(reference.log_evidence) and reference.log_evidence_se >= 0
    assert reference.exact == problem.has_exact
    expected = problem.quantities(prior_draws(problem, 2))
    assert set(reference.moments) == set(expected)
    for key, moments in reference.moments.items():
        for part in moments:
            assert part.shape == expected[key].shape[1:] and torch.isfinite(part).all()
    per_draw = problem.local_marginals(prior_draws(problem, 2))
    assert set(reference.local_marginals) == set(per_draw)
    for key, marginals in reference.local_marginals.items():
        assert marginals.shape == per_draw[key].shape[1:]
        torch.testing.assert_close(marginals.sum(-1), torch.ones(marginals.shape[:-1], dtype=torch.float64))
    assert reference.provenance


def check_one_svi_step_raises_no_warning(model: zoo.ZooModel, data: torch.Tensor) -> None:
    with warnings.catch_warnings():  # any warning fails the step
        warnings.simplefilter("error")
        result = run_inference(model, data, "svi", budget=1, seed=0, target=first_target(model))
    assert math.isfinite(result.losses[0])


# --- methods ---------------------------------------------------------------------------
def check_method_declarations(method: InferenceMethod) -> None:
    """What the sweep, the CLI and the tests read off a method."""
    assert method.name and method.budget_unit and method.description
    assert set(method.ladders) == set(PROFILES)
    for ladder in method.ladders.values():
        assert ladder and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in ladder)
    assert isinstance(method.smoke_budget, int) and method.smoke_budget > 0
    assert type(method.for_smoke_test()).__name__ == type(method).__name__


def check_method_on_target(method: InferenceMethod, model: zoo.ZooModel, data: torch.Tensor, target: str) -> None:
    """At its smoke budget the method gives finite answers, or says why it cannot run."""
    inference = method.for_smoke_test()
    reason = inference.not_applicable(model.target(data, target))
    if reason is not None:
        with _raises(NotApplicable):
            run_inference(model, data, inference, budget=inference.smoke_budget, seed=0, target=target)
        return
    result = run_inference(model, data, inference, budget=inference.smoke_budget, seed=0, target=target)
    assert result.method == method.name and result.budget_unit == method.budget_unit
    assert result.cost.wall_s > 0 and result.cost.density_evals > 0
    # A point estimate (one draw) has no spread and no evidence, and its row must say why;
    # the method declares it (calibration reads the declaration before running anything).
    point = result.num_draws == 1
    assert not point or result.note
    assert point == method.point_estimate
    for moments in result.moments.values():
        assert torch.isfinite(moments.mean).all() and (point or torch.isfinite(moments.sd).all())
    for marginals in result.local_marginals.values():
        torch.testing.assert_close(marginals.sum(-1), torch.ones(marginals.shape[:-1], dtype=torch.float64))
    assert math.isfinite(result.log_evidence) or result.kind.value == "mcmc" or point


# --- all of them -------------------------------------------------------------------------
def check_model(model: zoo.ZooModel, data: torch.Tensor | None = None, methods: bool = True) -> None:
    """Every check of a model: its declarations, its guide, its simulator, and on each of its
    targets the target rules (ARCHITECTURE.md §3) and its reference; with ``methods``, every
    registered method at its smoke budget too. ``data`` defaults to 30 simulated points. A
    target without an exact answer needs a stored gold standard, which
    :func:`check_reference_is_finite_with_declared_shapes` checks once it exists."""
    data = model.simulate(30, seed=0).data if data is None else data
    check_model_declarations(model)
    check_model_and_guide_sites_agree(model, data)
    check_simulate_is_reproducible(model)
    check_one_svi_step_raises_no_warning(model, data)
    for target in model.info.targets:
        problem = model.target(data, target)
        check_target_declarations(problem, target)
        check_log_density_matches_pyro(problem)
        if enumerates(problem):
            check_collapsed_model_sums_out_the_enumerated_sites(problem)
        if problem.discrete_sites:
            check_log_density_at_probabilities_is_the_expectation(problem)
        if problem.has_exact:
            check_reference_is_finite_with_declared_shapes(model, data, target)
        for name in available_methods() if methods else ():
            check_method_on_target(get_method(name), model, data, target)


def check_method(method: InferenceMethod, models: list[str] | None = None) -> None:
    """Every check of a method: its declarations, and a run at its smoke budget on every
    target of the registered models (or of ``models``), 20 simulated points each."""
    check_method_declarations(method)
    for name in zoo.available_models() if models is None else models:
        model = zoo.get_model(name)
        data = model.simulate(20, seed=0).data
        for target in model.info.targets:
            check_method_on_target(method, model, data, target)
