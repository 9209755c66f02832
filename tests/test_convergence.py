"""Slow checks that each method approaches the reference at a large budget, and that stored
gold standards agree with a quick recomputation. Tolerances are z = 5 standard errors of
the quantities compared (never tuned seeds); bounds are checked as bounds."""

from __future__ import annotations

import math

import pytest

import zoo
from inference_comparisons import run_inference, score
from inference_comparisons.references import build_reference
from zoo import references
from zoo.augmentation import DataAugmentation

pytestmark = pytest.mark.slow
Z = 5.0


def _default(name: str):
    model = zoo.get_model(name)
    return model, model.simulate(num_datapoints=200, seed=0).data


def _has_exact_latent(name: str) -> bool:
    model = zoo.get_model(name)
    return "latent" in model.info.targets and model.target(_default(name)[1], "latent").has_exact


EXACT_LATENT = [n for n in zoo.available_models() if _has_exact_latent(n)]
# Stored NUTS-based gold standards (the VAE's amortised reference has its own tests against
# quadrature in test_vae.py).
STORED = [(name, target) for name in zoo.available_models() for target in zoo.get_model(name).info.targets
          if references.load(zoo.get_model(name), target, _default(name)[1]) is not None
          and not zoo.get_model(name).target(_default(name)[1], target).has_amortised_guide]


@pytest.mark.parametrize("name,target", STORED)
def test_stored_reference_agrees_with_a_quick_recomputation(name, target):
    model, data = _default(name)
    stored = model.reference(data, target)
    # NUTS, the builder's second sampler: the stored references are ChEES builds.
    quick = build_reference(model, data, target, sampler="nuts", num_chains=2, draws_per_chain=500, num_warmup=300,
                            num_particles=20_000, seed=1, enforce_gates=False)
    for key, moments in stored.moments.items():
        difference = (moments.mean - quick.moments[key].mean).abs()
        tolerance = Z * (moments.se ** 2 + quick.moments[key].se ** 2).sqrt()
        assert (difference <= tolerance).all(), (key, difference, tolerance)
    assert abs(stored.log_evidence - quick.log_evidence) <= Z * math.hypot(stored.log_evidence_se,
                                                                             quick.log_evidence_se)


POSTERIOR_STORED = [name for name, target in STORED if target == "posterior"]


@pytest.mark.parametrize("name", EXACT_LATENT)
def test_importance_sampling_evidence_is_consistent_with_the_exact_answer(name):
    """Exact reference (se 0). When k̂ < 0.7 the standard error can be trusted and the
    estimate is within Z of it. Whatever k̂, the estimate cannot overshoot: E[p-hat] = p(x),
    so by Markov's inequality P(log p-hat - log p(x) > t) <= exp(-t); t = ln 10^4 fails a
    correct sampler once in 10^4 runs. (A mean-field guide over FA's 400 factor coordinates
    misses each point's factor correlation and its weights degenerate: k̂ says so.)"""
    model, data = _default(name)
    reference = model.reference(data, "latent")
    result = run_inference(model, data, "is_guide", budget=100_000, seed=0, target="latent")
    row = score(result, reference)
    if row["khat"] < 0.7:
        assert abs(row["log_evidence_error"]) <= Z * result.log_evidence_se
    assert row["log_evidence_error"] < math.log(1e4)


@pytest.mark.parametrize("name", EXACT_LATENT)
def test_svi_evidence_is_a_lower_bound_that_tightens(name):
    model, data = _default(name)
    reference = model.reference(data, "latent")
    errors = []
    for steps in (100, 2000):
        result = run_inference(model, data, "svi", budget=steps, seed=0, target="latent")
        error = score(result, reference)["log_evidence_error"]
        assert error <= Z * result.log_evidence_se  # the ELBO never exceeds log p(x)
        errors.append(error)
    assert errors[1] > errors[0]


def _augmentable(name: str) -> bool:
    return isinstance(zoo.get_model(name).target(_default(name)[1], "posterior"), DataAugmentation)


#: Samplers of the posterior targets and their budgets: the lockstep samplers (ChEES, NUTS),
#: NUTS in a fitted flow's base space (neutra) and data augmentation (gibbs) must reach one
#: posterior. Pyro's NUTS (`nuts`) is held to it on the summed-out discrete posteriors; on the
#: others the quick recomputation above already runs Pyro's NUTS on the same potential (it
#: took 60-90 s a cell there, the suite's slowest).
POSTERIOR_SAMPLERS = ([(name, method, 1024) for name in POSTERIOR_STORED
                       for method in ("chees", "nuts_lockstep", "neutra")]
                      + [(name, "nuts", 1000) for name in POSTERIOR_STORED if name in ("gmm", "hmm")]
                      + [(name, "gibbs", 1024) for name in POSTERIOR_STORED if _augmentable(name)])


@pytest.mark.parametrize("name,method,budget", POSTERIOR_SAMPLERS)
def test_posterior_sampler_means_within_monte_carlo_error(name, method, budget):
    model, data = _default(name)
    reference = model.reference(data, "posterior")
    row = score(run_inference(model, data, method, budget=budget, seed=0, target="posterior"), reference)
    # mean_error is in posterior sds; the MC error of a mean is 1/sqrt(ESS) of them.
    assert row["mean_error"] <= Z * math.sqrt(1 / row["ess_min"] + row["mean_error_ref_se"] ** 2)
    if (name, method) not in RARE_DIVERGENCES:
        assert row["divergences"] == 0


#: Samplers whose runs on a posterior can show a divergence with unbiased means: lockstep NUTS's
#: diagonal mass in factor analysis' Heywood tails (0-2 divergent transitions of 16 x 64 at
#: 1,024 draws and of 16 x 256 at 4,096, seeds 0 and 1; ChEES, with its lower target
#: acceptance and longer warm-up per chain-gradient, had none).
RARE_DIVERGENCES = {("factor_analysis", "nuts_lockstep")}


def _posterior_dimension(name: str) -> int:
    return sum(prior.event_shape.numel() for prior in zoo.get_model(name).priors().values())


# The collapse is the curse of dimension: a two-variance posterior (state_space) is within
# prior IS's reach at 100,000 particles (k̂ = -0.66 measured), one of nine or more is not.
@pytest.mark.parametrize("name", [n for n in POSTERIOR_STORED if _posterior_dimension(n) > 2])
def test_prior_importance_sampling_collapses_and_the_guide_does_not(name):
    """On 200 points the posterior is far narrower than the prior in each of its many
    dimensions, so prior IS has k̂ > 0.7; the fitted guide as proposal does far better."""
    model, data = _default(name)
    reference = model.reference(data, "posterior")
    prior = score(run_inference(model, data, "is_prior", budget=100_000, seed=0), reference)
    guide = score(run_inference(model, data, "is_guide", budget=100_000, seed=0), reference)
    assert prior["khat"] > 0.7
    assert guide["khat"] < prior["khat"]
    assert abs(guide["log_evidence_error"]) < abs(prior["log_evidence_error"]) / 10


# Not the VAE: its curve decoder folds, so some data points' posteriors are bimodal, and NUTS
# chains do not cross between the modes (zoo.vae.model's docstring: they agree on 62% of the
# points); importance sampling and SBC check the VAE's exact answer instead.
@pytest.mark.parametrize("name", [n for n in EXACT_LATENT
                                  if zoo.get_model(n).target(_default(n)[1], "latent").continuous_sites
                                  and not zoo.get_model(n).target(_default(n)[1], "latent").has_amortised_guide])
def test_nuts_approaches_the_exact_continuous_latent_posterior(name):
    model, data = _default(name)
    reference = model.reference(data, "latent")
    row = score(run_inference(model, data, "nuts", budget=1000, seed=0, target="latent"), reference)
    assert row["mean_error"] <= Z * math.sqrt(1 / row["ess_min"])
