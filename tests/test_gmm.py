"""The Gaussian mixture: exact answers against brute force, priors, data and bad input."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

import zoo
from zoo.distributions import OrderedNormal, ShortMixture


def _brute_force(data, weights, locs, scales):
    """log p(x | theta) and p(z_n = k | x) by summing over all K^N assignments."""
    num, K = data.shape[0], weights.shape[0]
    joint = []
    paths = list(itertools.product(range(K), repeat=num))
    for path in paths:
        z = torch.tensor(path)
        log_p = weights.log()[z].sum() + torch.distributions.Normal(locs[z], scales[z]).log_prob(data).sum()
        joint.append(log_p)
    joint = torch.stack(joint)
    posterior = (joint - joint.logsumexp(0)).exp()
    marginals = torch.zeros(num, K, dtype=torch.float64)
    for p, path in zip(posterior, paths):
        marginals[torch.arange(num), torch.tensor(path)] += p
    return joint.logsumexp(0), marginals


@pytest.mark.parametrize("dim", [1, 2])
def test_exact_latent_answer_matches_brute_force(dim):
    model = zoo.get_model("gmm", dim=dim)
    sim = model.simulate(num_datapoints=6, seed=1)
    reference = model.reference(sim.data, target="latent")
    params = sim.true_params
    log_evidence, marginals = _brute_force(sim.data, params["weights"], params["locs"], params["scales"])
    assert reference.exact and reference.log_evidence_se == 0.0
    assert reference.log_evidence == pytest.approx(float(log_evidence), abs=1e-10)
    torch.testing.assert_close(reference.local_marginals["assignment"], marginals, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dim", [1, 2])
def test_the_fast_mixture_density_is_torchs_to_rounding(dim):
    """``ShortMixture``, the collapsed model's likelihood, uses the mixing logits without
    renormalising them and reduces the components over a leading axis. Broadcast over
    particles and data points as under the importance samplers' particle plate, its value
    and gradient must be torch's ``MixtureSameFamily``'s."""
    generator = torch.Generator().manual_seed(0)
    f64 = torch.float64
    weights = torch.distributions.Dirichlet(torch.ones(3, dtype=f64)).sample((5, 1))  # (S, 1, K)
    locs = torch.randn(5, 1, 3, dim, dtype=f64, generator=generator).requires_grad_()
    scales = (0.5 + torch.rand(5, 1, 3, dim, dtype=f64, generator=generator)).requires_grad_()
    data = torch.randn(7, dim, dtype=f64, generator=generator)
    values = []
    for cls in (ShortMixture, dist.MixtureSameFamily):
        mixture = cls(dist.Categorical(weights), dist.Normal(locs, scales).to_event(1))
        log_prob = mixture.expand((5, 7)).log_prob(data)
        values.append((log_prob, *torch.autograd.grad(log_prob.sum(), (locs, scales))))
    assert values[0][0].shape == (5, 7)
    for ours, torchs in zip(*values):
        torch.testing.assert_close(ours, torchs, atol=1e-12, rtol=1e-12)


def test_posterior_density_of_an_invalid_scale_is_not_finite_rather_than_an_error():
    """A fixed-step HMC trajectory can reach a scale of NaN or inf (the default sweep's
    hmc at budget 50 did). Under the samplers' validation_enabled(False) its density must be
    non-finite, which Pyro counts as a divergence, not a ValueError that loses the run: the
    priors built once in ``target`` must not validate either."""
    model = zoo.get_model("gmm")
    sim = model.simulate(num_datapoints=20, seed=0)
    target = model.target(sim.data, "posterior")
    params = {k: sim.true_params[k].unsqueeze(0).repeat(3, *([1] * sim.true_params[k].dim()))
              for k in ("weights", "locs", "scales")}
    params["scales"][1, 0] = math.nan
    params["scales"][2, 0] = math.inf
    with pyro.validation_enabled(False):
        log_density = target.log_density(params)
    assert torch.isfinite(log_density[0]) and not torch.isfinite(log_density[1:]).any()


def test_ordered_prior_is_normalised_and_sorted():
    """K! * prod N(mu_k) on the ordered region integrates to one: E_sorted-draws[1] checked by
    importance sampling from the unordered normal (the indicator of order keeps 1/K!)."""
    prior = OrderedNormal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64), 3, 1)
    draws = prior.sample((1000,))
    assert (draws[:, 1:, 0] > draws[:, :-1, 0]).all()
    generator = torch.Generator().manual_seed(0)
    unordered = torch.randn(200_000, 3, 1, generator=generator, dtype=torch.float64)
    ordered = (unordered[:, 1:, 0] > unordered[:, :-1, 0]).all(-1)
    ratio = (prior.log_prob(unordered) - torch.distributions.Normal(0.0, 1.0).log_prob(unordered).sum((-1, -2))).exp()
    mass = (ratio * ordered).mean()
    se = (ratio * ordered).std() / math.sqrt(len(ratio))
    assert abs(float(mass) - 1.0) < 5 * float(se)


def test_per_component_prior_means_give_the_normalised_truncated_prior():
    """Prior means (-2, 2) for K = 2 rows of D = 2: density prod_k N(mu_k | m_k, s^2 I) / P(first
    coordinates ordered), with P = Phi(4 / (5 sqrt 2)); its draws are ordered, and importance
    sampling from the unordered normals integrates it to one. The model passes every model
    check in this configuration, and EM says it does not apply (its relabelling assumes an
    exchangeable prior)."""
    from inference_comparisons import get_method
    from inference_comparisons.testing import check_model

    model = zoo.get_model("gmm", num_components=2, dim=2, mean_prior_loc=(-2.0, 2.0))
    prior = model.priors()["locs"]
    assert prior.log_mass == pytest.approx(math.log(stats.norm.cdf(4 / (5 * math.sqrt(2)))), abs=1e-8)
    torch.manual_seed(0)
    assert bool(prior.support.check(prior.sample((2000,))).all())
    means = torch.tensor([-2.0, 2.0], dtype=torch.float64)[:, None]
    unordered = means + 5 * torch.randn(200_000, 2, 2, dtype=torch.float64)
    ratio = (prior.log_prob(unordered) - torch.distributions.Normal(means, 5.0).log_prob(unordered).sum((-1, -2))).exp()
    ratio = ratio * prior.support.check(unordered)
    assert abs(float(ratio.mean()) - 1.0) < 5 * float(ratio.std()) / math.sqrt(len(ratio))
    data = model.simulate(30, seed=0).data
    check_model(model, data, methods=False)
    assert "relabel" in get_method("em").not_applicable(model.target(data, "posterior"))


def test_old_faithful_ships_and_is_standardised():
    data = zoo.get_model("gmm").load_dataset("old_faithful")
    assert data.shape == (272, 1)
    assert float(data.mean()) == pytest.approx(0.0, abs=1e-12)
    assert zoo.get_model("gmm", dim=2).load_dataset("old_faithful").shape == (272, 2)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_components": 0}, "num_components"),
    ({"weights": (0.5, 0.6, 0.1)}, "weights"),
    ({"locs": (1.0, 0.0, 2.0)}, "increasing"),
    ({"scales": (1.0, -1.0, 1.0)}, "scales"),
    ({"concentration": -1.0}, "concentration"),
    ({"bogus": 1}, "unknown hyperparameter"),
])
def test_bad_hyperparameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.get_model("gmm", **kwargs)


def test_unknown_model_lists_the_zoo():
    with pytest.raises(ValueError, match="available: .*gmm"):
        zoo.get_model("gmmm")


@pytest.mark.parametrize("data,match", [
    (torch.tensor([0.0, float("nan"), 1.0]), "finite"),
    (torch.zeros(4, 2), "column"),
    (torch.zeros(2, 2, 2), "shape"),
    ("abc", "tensor or array"),
    (torch.tensor([True, False]), "real-valued"),
])
def test_bad_data_is_named(data, match):
    with pytest.raises(ValueError, match=match):
        zoo.get_model("gmm").target(data, "posterior")


def test_unknown_target_is_named():
    with pytest.raises(ValueError, match="accepted: posterior, latent"):
        zoo.get_model("gmm").target(torch.zeros(3), "joint")
