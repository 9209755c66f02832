"""Factor analysis and PPCA: closed forms against dense linear algebra, the Pyro models
against the plain-torch densities, input checking, and every method on tiny problems."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.infer
import pyro.optim
import pytest
import torch
from scipy import stats
from sklearn.decomposition import PCA, FactorAnalysis

import zoo
from inference_comparisons.estimators.particles import importance_log_weights, log_joint, prior_proposal
from inference_comparisons.methods import get_method
from inference_comparisons.runner import run_inference
from zoo.exact.gaussian import factor_posterior, lower_triangular_form, ppca_maximum_likelihood
from zoo.factor_analysis import assemble_loadings, split_loadings

MODELS = ("factor_analysis", "ppca")


def _random_instance(name: str, dim: int = 5, num_factors: int = 2, seed: int = 0) -> zoo.ZooModel:
    """An instance with a non-zero loc and a random lower-triangular W (not the defaults)."""
    rng = np.random.default_rng(seed)
    loadings = np.tril(rng.normal(size=(dim, num_factors)), -1)
    loadings[np.arange(num_factors), np.arange(num_factors)] = rng.uniform(0.5, 1.5, num_factors)
    noise = {"noise_scales": tuple(rng.uniform(0.3, 0.9, dim))} if name == "factor_analysis" else {"noise_scale": 0.6}
    return zoo.get_model(name, dim=dim, num_factors=num_factors, loc=tuple(rng.normal(size=dim)),
                         loadings=tuple(map(tuple, loadings)), **noise)


def _dense(model: zoo.ZooModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    params = model.true_params()
    variances = np.broadcast_to(params["noise"].numpy() ** 2, (model.dim,))
    return params["loc"].numpy(), params["loadings"].numpy(), np.diag(variances)


# --- closed forms ------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_exact_latent_matches_dense_gaussian_conditioning(name):
    model = _random_instance(name)
    data = model.simulate(7, seed=1).data
    reference = model.reference(data, target="latent")
    loc, loadings, noise = _dense(model)
    x = data.numpy()
    covariance = loadings @ loadings.T + noise
    # log p(x | theta) from scipy's dense multivariate normal.
    expected = stats.multivariate_normal(loc, covariance).logpdf(x).sum()
    assert reference.exact and reference.log_evidence_se == 0.0
    assert reference.log_evidence == pytest.approx(expected, abs=1e-5)
    # p(f | x) from the joint covariance of (f, x): [[I, W^T], [W, W W^T + Psi]].
    mean = (loadings.T @ np.linalg.solve(covariance, (x - loc).T)).T
    conditional = np.eye(model.num_factors) - loadings.T @ np.linalg.solve(covariance, loadings)
    moments = reference.moments["factors"]
    np.testing.assert_allclose(moments.mean.numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(moments.sd.numpy(), np.broadcast_to(np.sqrt(np.diag(conditional)), mean.shape), atol=1e-5)
    assert torch.equal(moments.se, torch.zeros_like(moments.mean))
    assert reference.local_marginals == {} and "exact" in reference.provenance["method"]


@pytest.mark.parametrize("log_noise_sd", [0.0, -10.0, -20.0])
def test_posterior_likelihood_stays_exact_in_the_heywood_tail(log_noise_sd):
    """A noise variance near zero (a Heywood case, where importance-sampling proposals reach)
    still has a finite, well-defined marginal likelihood; the posterior target must score it
    as scipy's dense Gaussian does. ``LowRankMultivariateNormal``'s Woodbury form was off by
    866 nats at a noise sd of e^-20 on the default model's 200 simulated points."""
    model = _random_instance("factor_analysis")
    data = model.simulate(50, seed=2).data
    truth = model.true_params()
    noise = truth["noise"].clone()
    noise[2] = math.exp(log_noise_sd)
    diagonal, lower = split_loadings(truth["loadings"])
    draws = {"loc": truth["loc"], "loadings_diagonal": diagonal, "loadings_lower": lower, "noise": noise}
    ours = model.target(data, "posterior").pointwise_log_likelihood({k: v[None] for k, v in draws.items()})
    covariance = truth["loadings"].numpy() @ truth["loadings"].numpy().T + np.diag(noise.numpy() ** 2)
    expected = stats.multivariate_normal(truth["loc"].numpy(), covariance).logpdf(data.numpy())
    np.testing.assert_allclose(ours[0].numpy(), expected, rtol=1e-9)


def test_loadings_assembly_round_trips_and_rotation_keeps_covariance():
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    lower = lower_triangular_form(w)
    assert torch.equal(lower.triu(1), torch.zeros_like(lower)) and (lower.diagonal() >= 0).all()
    torch.testing.assert_close(lower @ lower.T, w @ w.T)
    diagonal, strictly_lower = split_loadings(lower)
    assert strictly_lower.shape == (6 * 3 - 6,)
    torch.testing.assert_close(assemble_loadings(diagonal, strictly_lower, 6), lower)


def test_ppca_maximum_likelihood_matches_sklearn_and_beats_the_truth():
    model = _random_instance("ppca", dim=6, num_factors=2)
    data = model.simulate(300, seed=2).data
    fit = ppca_maximum_likelihood(data, 2)
    num = data.shape[0]
    # scikit-learn's PCA is PPCA with (N - 1)-denominator covariances (Tipping & Bishop).
    pca = PCA(n_components=2).fit(data.numpy())
    ours = fit["loadings"] @ fit["loadings"].T + fit["noise"] ** 2 * torch.eye(6, dtype=torch.float64)
    np.testing.assert_allclose(ours.numpy(), pca.get_covariance() * (num - 1) / num, atol=1e-8)
    assert float(fit["noise"] ** 2) == pytest.approx(pca.noise_variance_ * (num - 1) / num, abs=1e-10)
    np.testing.assert_allclose(fit["loc"].numpy(), data.numpy().mean(0), atol=1e-12)
    assert torch.equal(fit["loadings"].triu(1), torch.zeros(6, 2, dtype=torch.float64))

    def log_likelihood(loc, loadings, noise):
        return float(torch.distributions.LowRankMultivariateNormal(
            loc, loadings, (noise ** 2).expand(6)).log_prob(data).sum())

    best = log_likelihood(fit["loc"], fit["loadings"], fit["noise"])
    truth = model.true_params()
    assert best >= log_likelihood(truth["loc"], truth["loadings"], truth["noise"])
    # ... and it is a local maximum: small perturbations of each parameter only lose.
    for step in (1e-3, -1e-3):
        assert best >= log_likelihood(fit["loc"] + step, fit["loadings"], fit["noise"])
        assert best >= log_likelihood(fit["loc"], fit["loadings"] * (1 + step), fit["noise"])
        assert best >= log_likelihood(fit["loc"], fit["loadings"], fit["noise"] * (1 + step))


def test_factor_analysis_closed_forms_match_sklearn_at_its_fit():
    """At scikit-learn's fitted (mean, W, Psi), our exact log p(x) equals its
    ``score_samples`` and our factor posterior means equal its ``transform`` up to the
    rotation that makes W lower-triangular (compared through their norms)."""
    data = _random_instance("factor_analysis", dim=6).simulate(200, seed=6).data
    fitted = FactorAnalysis(n_components=2, random_state=0).fit(data.numpy())
    loadings = lower_triangular_form(torch.as_tensor(fitted.components_.T, dtype=torch.float64))
    model = zoo.get_model("factor_analysis", dim=6, num_factors=2, loc=tuple(fitted.mean_.tolist()),
                          loadings=tuple(map(tuple, loadings.tolist())),
                          noise_scales=tuple(np.sqrt(fitted.noise_variance_).tolist()))
    reference = model.reference(data, target="latent")
    assert reference.log_evidence == pytest.approx(fitted.score_samples(data.numpy()).sum(), abs=1e-5)
    np.testing.assert_allclose(reference.moments["factors"].mean.norm(dim=-1).numpy(),
                               np.linalg.norm(fitted.transform(data.numpy()), axis=-1), atol=1e-5)


# --- the Pyro models against the plain-torch densities -----------------------------------
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("target_name", ("latent", "posterior"))
def test_log_density_matches_collapsed_model_on_prior_draws(name, target_name):
    model = _random_instance(name)
    data = model.simulate(9, seed=3).data
    target = model.target(data, target_name)
    _, draws = importance_log_weights(target.collapsed_model, prior_proposal(target.collapsed_model), 16,
                                      target.max_plate_nesting, target.latent_sites)
    expected = log_joint(target.collapsed_model, draws, target.max_plate_nesting)
    torch.testing.assert_close(target.log_density(draws), expected)
    assert target.pointwise_log_likelihood(draws).shape == (16, 9)
    assert torch.isfinite(expected).all()
    if target_name == "posterior":
        quantities = target.quantities(draws)
        assert quantities["covariance"].shape == (16, 5, 5) and quantities["noise_variances"].shape == (16, 5)


@pytest.mark.parametrize("name", MODELS)
def test_explicit_factor_model_integrates_to_the_collapsed_model(name):
    """Bayes' rule: log p(x, f | theta) - log p(f | x, theta) = log p(x | theta) for any f,
    with p(f | x, theta) the closed form: ties the explicit-factor ``model`` to the
    ``collapsed_model`` (and to the exact reference)."""
    model = _random_instance(name)
    data = model.simulate(6, seed=4).data
    posterior = model.target(data, "posterior")
    _, draws = importance_log_weights(posterior.collapsed_model, prior_proposal(posterior.collapsed_model), 4,
                                      posterior.max_plate_nesting, posterior.latent_sites)
    factors = torch.randn(4, 6, model.num_factors, dtype=torch.float64)
    explicit = log_joint(lambda: model.model(data), {**draws, "factors": factors}, 1)
    for s in range(4):
        loadings = assemble_loadings(draws["loadings_diagonal"][s], draws["loadings_lower"][s], model.dim)
        variances = (draws["noise"][s] ** 2).expand(model.dim)
        mean, covariance = factor_posterior(data, draws["loc"][s], loadings, variances)
        conditional = torch.distributions.MultivariateNormal(mean, covariance).log_prob(factors[s]).sum()
        collapsed = posterior.log_density({k: v[s:s + 1] for k, v in draws.items()})[0]
        torch.testing.assert_close(explicit[s] - conditional, collapsed)
    # The same identity at the true parameters gives the latent target's exact evidence.
    latent = model.target(data, "latent")
    reference = latent.exact()
    mean = reference.moments["factors"].mean
    _, covariance = factor_posterior(data, *(model.true_params()[k] for k in ("loc", "loadings")),
                                     (model.true_params()["noise"] ** 2).expand(model.dim))
    conditional = torch.distributions.MultivariateNormal(mean, covariance).log_prob(factors).sum(-1)
    torch.testing.assert_close(latent.log_density({"factors": factors}) - conditional,
                               torch.full((4,), reference.log_evidence, dtype=torch.float64))


@pytest.mark.parametrize("name", MODELS)
def test_hand_written_guide_fits_the_posterior_target(name):
    model = zoo.get_model(name)
    data = model.simulate(20, seed=5).data
    target = model.target(data, "posterior")
    pyro.clear_param_store()
    svi = pyro.infer.SVI(target.model, lambda: model.guide(data), pyro.optim.Adam({"lr": 0.01}),
                         pyro.infer.Trace_ELBO(max_plate_nesting=1))
    losses = [svi.step() for _ in range(5)]
    assert all(math.isfinite(loss) for loss in losses)
    # It starts at the PPCA maximum-likelihood solution, rotated into the sampled form.
    start = ppca_maximum_likelihood(data, model.num_factors)["loadings"]
    diagonal = pyro.param("loadings_diagonal_loc").detach().exp()
    torch.testing.assert_close(diagonal, start.diagonal(), atol=0.1, rtol=0.1)
    pyro.clear_param_store()


# --- data, hyperparameters and bad input ---------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_simulate_and_datasets(name):
    model = zoo.get_model(name)
    assert (model.dim, model.num_factors) == (6, 2)
    sim = model.simulate(50, seed=0)
    assert sim.data.shape == (50, 6) and sim.true_latents["factors"].shape == (50, 2)
    assert torch.equal(sim.data, model.simulate(50, seed=0).data)
    assert set(model.info.datasets) >= {"simulated", "wine", "iris"}
    wine = zoo.get_model(name, dim=13, num_factors=3).load_dataset("wine")
    iris = zoo.get_model(name, dim=4, num_factors=1).load_dataset("iris")
    assert wine.shape == (178, 13) and iris.shape == (150, 4)
    torch.testing.assert_close(wine.mean(0), torch.zeros(13, dtype=torch.float64))
    torch.testing.assert_close(iris.std(0), torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_raises_clear_errors(name):
    model = zoo.get_model(name)
    with pytest.raises(ValueError, match=r"6 column\(s\).*got shape \(5, 4\)"):
        model.target(torch.zeros(5, 4), "latent")
    with pytest.raises(ValueError, match=r"must be finite, found nan"):
        model.target(torch.tensor([[0.0] * 5 + [float("nan")]]), "posterior")
    with pytest.raises(ValueError, match=r"must be finite, found inf"):
        model.validate([[0.0] * 5 + [float("inf")]])
    with pytest.raises(ValueError, match=r"num_factors must be an integer in 1\.\.2 .*got 3"):
        zoo.get_model(name, dim=3, num_factors=3)
    with pytest.raises(ValueError, match=r"num_factors must be an integer in 1\.\.3 .*got 7"):
        zoo.get_model(name, dim=4, num_factors=7)
    with pytest.raises(ValueError, match=r"lower-triangular with a positive diagonal"):
        zoo.get_model(name, dim=3, num_factors=2, loadings=((1.0, 0.5), (0.2, 1.0), (0.1, 0.1)))
    with pytest.raises(ValueError, match=r"'wine' has 13 columns .* dim=6; construct it with dim=13"):
        model.load_dataset("wine")
    with pytest.raises(ValueError, match=r"unknown dataset 'digits'; accepted: wine, iris"):
        model.load_dataset("digits")
    with pytest.raises(ValueError, match=r"unknown target 'joint'"):
        model.target(model.simulate(3, 0).data, "joint")
    with pytest.raises(ValueError, match=r"num_factors must be an integer in 1\.\.5"):
        ppca_maximum_likelihood(torch.zeros(4, 6), 6)


# --- every method on tiny problems -------------------------------------------------------
#: Tiny budgets: these check plumbing and shapes, not accuracy. NUTS on the posterior gets
#: 10 draws (5 warm-up + 5 per chain): its early warm-up trees are deep and each gradient
#: of Pyro's potential costs ~10 ms here.
_BUDGETS = {"exact": 1, "svi": 30, "nuts": 20, "is_prior": 200, "is_guide": 200}
_CELLS = [("latent", m) for m in ("exact", "svi", "nuts", "is_prior", "is_guide")] + \
         [("posterior", m) for m in ("svi", "nuts", "is_prior")]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("target_name,method", _CELLS)
def test_methods_give_finite_results(name, target_name, method):
    model = zoo.get_model(name)
    data = model.simulate(8, seed=0).data
    budget = 10 if (target_name, method) == ("posterior", "nuts") else _BUDGETS[method]
    result = run_inference(model, data, get_method(method).for_smoke_test(), budget, seed=0, target=target_name)
    expected = {"factors"} if target_name == "latent" else {"loc", "covariance", "noise_variances"}
    assert set(result.moments) == expected
    for moments in result.moments.values():
        assert torch.isfinite(moments.mean).all() and torch.isfinite(moments.sd).all()
    if method != "nuts":
        assert math.isfinite(result.log_evidence)


def test_prior_importance_sampling_collapses_as_the_data_grow():
    """With the prior as proposal, log w = sum_n log p(x_n | f_n): the divergence between
    the factors' posterior and their prior is a sum over data points, KL_N = sum_n
    KL(p(f_n | x_n) || N(0, I)), so the particles needed grow like exp(KL_N). At N = 100 the
    KL is hundreds of nats (checked below), far beyond log(2000) ~ 7.6, so the weights
    degenerate and k̂ is large; at N = 2 it is a few nats and k̂ is smaller."""
    model = zoo.get_model("factor_analysis")
    khat, kl = {}, {}
    for num in (2, 100):
        data = model.simulate(num, seed=0).data
        target = model.target(data, "latent")
        reference = target.exact()
        mean = reference.moments["factors"].mean
        params = model.true_params()
        _, covariance = factor_posterior(data, params["loc"], params["loadings"], params["noise"] ** 2)
        kl[num] = float(torch.distributions.kl_divergence(
            torch.distributions.MultivariateNormal(mean, covariance),
            torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                   torch.eye(2, dtype=torch.float64))).sum())
        khat[num] = run_inference(model, data, "is_prior", 2000, seed=0, target="latent").diagnostics.khat
    assert kl[2] < math.log(2000) < 10 * math.log(2000) < kl[100]
    assert khat[100] > 0.7
    assert khat[100] > khat[2]
