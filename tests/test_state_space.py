"""The linear-Gaussian state-space model: the Kalman filter, smoother and backward sampler
against brute-force Gaussian conditioning of the joint, the textbook model against its
collapsed and one-site twins, Durbin & Koopman's Nile table, and the stored gold
standards against quadrature."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
import statsmodels.api as statsmodels
from scipy import optimize

import zoo
from zoo.datasets import load_csv
from zoo.exact.kalman import kalman_filter, rts_smoother, sample_states

F64 = torch.float64
#: (A, C, state variances, observation variances): the local level, the local linear trend
#: (a 2-D state seen through one coordinate), and a rotating 2-D state seen in 3 coordinates.
CASES = {
    "local_level": (((1.0,),), ((1.0,),), (0.3,), (0.8,)),
    "local_linear_trend": (((1.0, 1.0), (0.0, 1.0)), ((1.0, 0.0),), (0.2, 0.05), (0.5,)),
    "rotation": (((0.8, -0.3), (0.3, 0.8)), ((1.0, 0.0), (0.5, 1.0), (-0.2, 0.7)), (0.4, 0.1), (0.3, 0.6, 0.9)),
}


def _model(case: str, **extra) -> zoo.ZooModel:
    A, C, q, r = CASES[case]
    return zoo.get_model("state_space", transition_matrix=A, emission_matrix=C, state_variance=q,
                         observation_variance=r, initial_loc=0.3, initial_scale=1.5, **extra)


def dense_joint(model, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The joint Gaussian of the stacked path z (T D) and data x (T P), built from the
    generative process directly: z = M u with u = (z_1, eta_2, ..., eta_T), x = (I_T kron C) z
    + eps. Returns (mean_z, cov_z, mean_x, cov_x) and, through cov_z C^T, their cross term."""
    A, C = model.matrices()
    params = model.true_params()
    m0, P0 = model.initial_law()
    D, T = A.shape[0], num_steps
    M = torch.zeros(T * D, T * D, dtype=F64)
    for t in range(T):
        for s in range(t + 1):
            M[t * D:(t + 1) * D, s * D:(s + 1) * D] = torch.linalg.matrix_power(A, t - s)
    mean_z = torch.cat([torch.linalg.matrix_power(A, t) @ m0 for t in range(T)])
    cov_z = M @ torch.block_diag(P0, *[torch.diag(params["state_variance"])] * (T - 1)) @ M.T
    big_C = torch.block_diag(*[C] * T)
    cov_x = big_C @ cov_z @ big_C.T + torch.diag(params["observation_variance"].repeat(T))
    return mean_z, cov_z, big_C @ mean_z, cov_x


def conditioned(model, data: torch.Tensor):
    """p(z | x) and log p(x) by conditioning the dense joint: the brute force."""
    A, C = model.matrices()
    mean_z, cov_z, mean_x, cov_x = dense_joint(model, data.shape[0])
    cross = cov_z @ torch.block_diag(*[C] * data.shape[0]).T
    gain = torch.linalg.solve(cov_x, cross.T).T
    flat = data.reshape(-1)
    post_mean = mean_z + gain @ (flat - mean_x)
    post_cov = cov_z - gain @ cross.T
    log_evidence = torch.distributions.MultivariateNormal(mean_x, cov_x).log_prob(flat)
    return post_mean, post_cov, log_evidence


@pytest.mark.parametrize("case", CASES)
def test_filter_and_smoother_match_dense_conditioning(case):
    model = _model(case)
    data = model.simulate(num_datapoints=9, seed=1).data
    post_mean, post_cov, log_evidence = conditioned(model, data)
    latent = model.target(data, "latent")
    reference = latent.exact()
    D = model.state_dim
    assert reference.log_evidence == pytest.approx(float(log_evidence), abs=1e-8)
    assert torch.allclose(reference.moments["states"].mean.reshape(-1), post_mean, atol=1e-8, rtol=0)
    assert torch.allclose(reference.moments["states"].sd.reshape(-1), post_cov.diagonal().sqrt(), atol=1e-8, rtol=0)
    _, covs = rts_smoother(latent.filtered, latent.transition)
    for t in range(data.shape[0]):  # the smoother's whole D x D blocks, not only their diagonals
        assert torch.allclose(covs[t], post_cov[t * D:(t + 1) * D, t * D:(t + 1) * D], atol=1e-8, rtol=0)
    # The one-step predictive densities sum to the evidence: the posterior target's pointwise terms.
    pointwise = model.target(data, "posterior").pointwise_log_likelihood(
        {k: v[None] for k, v in model.true_params().items()})
    assert float(pointwise.sum()) == pytest.approx(float(log_evidence), abs=1e-8)


def test_filter_is_batched_over_parameter_draws():
    model = _model("local_linear_trend")
    data = model.simulate(num_datapoints=12, seed=2).data
    draws = {"state_variance": torch.tensor([[0.2, 0.05], [1.0, 0.3], [0.01, 0.02]], dtype=F64),
             "observation_variance": torch.tensor([[0.5], [0.1], [2.0]], dtype=F64)}
    batched = model.filter(data, draws).step_log_likelihood.sum(-1)
    one_by_one = [model.filter(data, {k: v[i] for k, v in draws.items()}).step_log_likelihood.sum() for i in range(3)]
    assert torch.allclose(batched, torch.stack(one_by_one), atol=1e-10, rtol=0)


def test_backward_sampling_draws_the_joint_smoothing_law():
    """Means and the lag-one cross-covariances of FFBS paths within 5 Monte Carlo standard
    errors of the dense posterior (the se of a covariance estimate from the Gaussian fourth
    moments: sqrt((s_ii s_jj + s_ij^2) / S))."""
    model = _model("local_linear_trend")
    data = model.simulate(num_datapoints=6, seed=3).data
    post_mean, post_cov, _ = conditioned(model, data)
    latent = model.target(data, "latent")
    num = 40_000
    paths = sample_states(latent.filtered, latent.transition, num, torch.Generator().manual_seed(0)).reshape(num, -1)
    sd = post_cov.diagonal().sqrt()
    assert ((paths.mean(0) - post_mean).abs() <= 5 * sd / math.sqrt(num)).all()
    empirical = torch.cov(paths.T)
    se = ((torch.outer(sd ** 2, sd ** 2) + post_cov ** 2) / num).sqrt()
    assert ((empirical - post_cov).abs() <= 5 * se).all()


@pytest.mark.parametrize("case", CASES)
def test_markov_model_integrates_to_its_collapsed_twin(case):
    """For any path z, log p(x, z) of the ``pyro.markov`` model minus log p(z | x) of the
    dense posterior is log p(x): the ``GaussianHMM`` twin's density, at the true variances
    and (through the posterior target) at other draws."""
    model = _model(case)
    data = model.simulate(num_datapoints=7, seed=4).data
    post_mean, post_cov, log_evidence = conditioned(model, data)
    params = model.true_params()
    path = post_mean + 0.7 * torch.randn(post_mean.shape, dtype=F64, generator=torch.Generator().manual_seed(5))
    steps = path.reshape(data.shape[0], -1)
    conditioned_model = pyro.condition(model.model, data={f"state_{t}": z for t, z in enumerate(steps)})
    joint = poutine.trace(conditioned_model).get_trace(data, params).log_prob_sum()
    posterior = torch.distributions.MultivariateNormal(post_mean, post_cov).log_prob(path)
    assert float(joint - posterior) == pytest.approx(float(log_evidence), abs=1e-8)
    collapsed = poutine.trace(model.collapsed_model).get_trace(data, params).log_prob_sum()
    assert float(collapsed) == pytest.approx(float(log_evidence), abs=1e-8)
    # ... and the latent target's plain-torch density, and its one-site path model, are the Markov model's.
    latent = model.target(data, "latent")
    assert float(latent.log_density({"states": steps[None]})) == pytest.approx(float(joint), abs=1e-9)
    path_model = pyro.condition(model.path_model, data={"states": steps})
    assert float(poutine.trace(path_model).get_trace(data, params).log_prob_sum()) == pytest.approx(
        float(joint), abs=1e-9)
    # GaussianHMM (a parallel scan) against the Kalman filter (a sequential one) at other variances.
    draws = {"state_variance": params["state_variance"][None] * torch.tensor([[0.5], [3.0]], dtype=F64),
             "observation_variance": params["observation_variance"][None] * torch.tensor([[2.0], [0.2]], dtype=F64)}
    posterior_target = model.target(data, "posterior")
    assert torch.allclose(posterior_target.log_likelihood(draws),
                          model.filter(data, draws).step_log_likelihood.sum(-1), atol=1e-8, rtol=0)


# --- the Nile: Durbin & Koopman's maximum-likelihood table ----------------------------------
def _nile() -> torch.Tensor:
    return load_csv("nile")["flow_1e8_m3"].unsqueeze(-1)  # raw flows: their table's units


def _diffuse_log_likelihood(data: torch.Tensor, observation_variance: float, level_variance: float) -> float:
    one = torch.eye(1, dtype=F64)
    filtered = kalman_filter(data, one, one, level_variance * one, observation_variance * one,
                             torch.zeros(1, dtype=F64), one, diffuse=True)
    return float(filtered.step_log_likelihood.sum())


def test_nile_maximum_likelihood_matches_durbin_and_koopman():
    """Their §2.10.3 (exact diffuse first level): sigma^2_eps = 15099, sigma^2_eta = 1469.1,
    log L = -633.46. Maximised over log variances by Nelder-Mead to a relative tolerance far
    below the 3 significant figures checked."""
    data = _nile()
    fit = optimize.minimize(lambda v: -_diffuse_log_likelihood(data, *np.exp(v)), x0=np.log([10_000.0, 1_000.0]),
                            method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 4000})
    observation_variance, level_variance = np.exp(fit.x)
    assert fit.success
    assert float(f"{observation_variance:.3g}") == 15100 and float(f"{level_variance:.3g}") == 1470
    assert -fit.fun == pytest.approx(-633.46, abs=0.005)


@pytest.mark.parametrize("variances", [(15099.0, 1469.1), (2000.0, 300.0), (30_000.0, 10.0)])
def test_nile_log_likelihood_matches_statsmodels(variances):
    """statsmodels' exact diffuse local level (an independent implementation) at the same
    parameters, to 1e-6."""
    data = _nile()
    local_level = statsmodels.tsa.UnobservedComponents(data.squeeze(-1).numpy(), level="local level",
                                                       use_exact_diffuse=True)
    assert _diffuse_log_likelihood(data, *variances) == pytest.approx(local_level.loglike(list(variances)), abs=1e-6)


# --- input checks ------------------------------------------------------------------------------
def test_bad_input_is_refused_with_a_clear_message():
    model = zoo.get_model("state_space")
    with pytest.raises(ValueError, match=r"must be finite, found nan at index \[3"):
        model.target(torch.tensor([0.1, 0.2, 0.3, float("nan"), 0.5]), "posterior")
    with pytest.raises(ValueError, match="1 column"):
        model.validate(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="transition_matrix must be square"):
        zoo.get_model("state_space", transition_matrix=((1.0, 0.0),))
    with pytest.raises(ValueError, match="one column per state"):
        zoo.get_model("state_space", emission_matrix=((1.0, 0.0),))
    with pytest.raises(ValueError, match="state_variance must be 1 positive numbers"):
        zoo.get_model("state_space", state_variance=(-0.1,))
    with pytest.raises(ValueError, match="rows of numbers"):
        zoo.get_model("state_space", transition_matrix="identity")
    with pytest.raises(ValueError, match="Nile is one series"):
        _model("rotation").load_dataset("nile")
    trend = _model("local_linear_trend")
    A, C = trend.matrices()
    with pytest.raises(ValueError, match="square, invertible emission matrix"):
        kalman_filter(torch.zeros(3, 1, dtype=F64), A, C, torch.eye(2, dtype=F64), torch.eye(1, dtype=F64),
                      torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64), diffuse=True)


def test_nile_dataset_is_the_standardised_series():
    data = zoo.get_model("state_space").load_dataset("nile")
    assert data.shape == (100, 1)
    assert float(data.mean()) == pytest.approx(0.0, abs=1e-12) and float(data.std()) == pytest.approx(1.0)


# --- the stored gold standards, from outside the builder ---------------------------------------
def _quadrature(model, data: torch.Tensor, size: int) -> tuple[float, dict[str, tuple[float, float]]]:
    """log p(x) and the posterior mean and sd of each variance of a local-level posterior by
    the trapezoid rule on a (size x size) grid of log variances: the integrand is smooth and
    negligible at the edges of the box (everything beyond 40 nats below the peak of a coarse
    pass is left out), where the rule converges faster than any power of the spacing."""
    posterior = model.target(data, "posterior")

    def log_density(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # In log-variance coordinates the Jacobian e^u e^v turns the LogNormal priors into Normals.
        draws = {"state_variance": u.reshape(-1, 1).exp(), "observation_variance": v.reshape(-1, 1).exp()}
        prior = torch.distributions.Normal(model.variance_prior_loc, model.variance_prior_scale)
        values = torch.cat([posterior.log_likelihood({k: d[i:i + 4096] for k, d in draws.items()})
                            for i in range(0, len(u.reshape(-1)), 4096)])
        return (values + prior.log_prob(u.reshape(-1)) + prior.log_prob(v.reshape(-1))).reshape(u.shape)

    wide = torch.linspace(model.variance_prior_loc - 6 * model.variance_prior_scale,
                          model.variance_prior_loc + 6 * model.variance_prior_scale, 121, dtype=F64)
    u, v = torch.meshgrid(wide, wide, indexing="ij")
    coarse = log_density(u, v)
    keep = coarse > coarse.max() - 40
    step = float(wide[1] - wide[0])
    axes = [torch.linspace(float(g[keep].min()) - step, float(g[keep].max()) + step, size, dtype=F64) for g in (u, v)]
    u, v = torch.meshgrid(*axes, indexing="ij")
    values = log_density(u, v)
    cell = float((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0]))
    log_evidence = torch.logsumexp(values.reshape(-1), 0) + math.log(cell)  # edges are ~0: trapezoid = sum
    weights = (values - values.max()).exp()
    weights = weights / weights.sum()
    moments = {}
    for site, grid in (("state_variance", u), ("observation_variance", v)):
        mean = float((weights * grid.exp()).sum())
        moments[site] = (mean, math.sqrt(float((weights * (grid.exp() - mean) ** 2).sum())))
    return float(log_evidence), moments


@pytest.mark.parametrize("dataset", ["simulated", "nile"])
def test_stored_posterior_reference_agrees_with_quadrature(dataset):
    """The stored NUTS gold standard of the two-variance posterior against quadrature, an
    answer from outside the builder: means within 5 of their standard errors, log evidence
    within 5 of its; the sds, whose error the reference does not state, within 2%. (On the
    simulated data, 61, 121, 241 and 481 points a side agree to 1e-13: the quadrature's
    error is nothing next to the reference's.)"""
    model = zoo.get_model("state_space")
    data = model.simulate(num_datapoints=200, seed=0).data if dataset == "simulated" else model.load_dataset("nile")
    stored = model.reference(data, "posterior")
    log_evidence, moments = _quadrature(model, data, 121)
    assert abs(stored.log_evidence - log_evidence) <= 5 * stored.log_evidence_se
    for site, (mean, sd) in moments.items():
        assert abs(float(stored.moments[site].mean) - mean) <= 5 * float(stored.moments[site].se), site
        assert float(stored.moments[site].sd) == pytest.approx(sd, rel=0.02), site


def test_likelihood_stays_exact_at_extreme_variance_ratios():
    """Where GaussianHMM's information form breaks down (a variance 1e-17 of the others gave
    +1e286 nats on the Nile), the posterior's likelihood is the Kalman filter's, and it
    differentiates there too."""
    model = zoo.get_model("state_space")
    posterior = model.target(model.load_dataset("nile"), "posterior")
    log_variances = torch.tensor([-40.0, -20.0, -8.0, 0.0, 8.0, 40.0], dtype=F64)
    for site, other in (("state_variance", "observation_variance"), ("observation_variance", "state_variance")):
        draws = {site: log_variances.exp()[:, None].requires_grad_(),
                 other: torch.full((6, 1), 0.3, dtype=F64, requires_grad=True)}
        values = posterior.log_likelihood(draws)
        assert torch.allclose(values, model.filter(posterior.data, draws).step_log_likelihood.sum(-1), atol=1e-8,
                              rtol=0)
        gradients = torch.autograd.grad(values.sum(), list(draws.values()))
        assert all(torch.isfinite(g).all() for g in gradients)
    # Both variances zero: F_t = 0 cannot be factorised; that draw gets NaN, the others their value.
    draws = {"state_variance": torch.tensor([[0.0], [0.05]], dtype=F64),
             "observation_variance": torch.tensor([[0.0], [0.5]], dtype=F64)}
    values = posterior.log_density(draws)
    assert not torch.isfinite(values[0]) and torch.isfinite(values[1])


def test_path_distribution_draws_the_chain_prior():
    """LinearGaussianChain's draws (the one-site path's prior, used by prior importance
    sampling) have the dense prior's mean and covariance, within 5 Monte Carlo se."""
    model = _model("local_linear_trend")
    mean_z, cov_z, _, _ = dense_joint(model, 5)
    chain = model.target(model.simulate(num_datapoints=5, seed=0).data, "latent").chain
    num = 40_000
    torch.manual_seed(0)
    paths = chain.sample((num,)).reshape(num, -1)
    sd = cov_z.diagonal().sqrt()
    assert ((paths.mean(0) - mean_z).abs() <= 5 * sd / math.sqrt(num)).all()
    se = ((torch.outer(sd ** 2, sd ** 2) + cov_z ** 2) / num).sqrt()
    assert ((torch.cov(paths.T) - cov_z).abs() <= 5 * se).all()
    assert torch.allclose(chain.log_prob(paths[:3].reshape(3, 5, 2)),
                          torch.distributions.MultivariateNormal(mean_z, cov_z).log_prob(paths[:3]), atol=1e-9, rtol=0)
