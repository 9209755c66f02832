"""The hidden Markov model: its two implementations agree, its exact algorithms match brute
force over all K^T paths, and the harness's methods run on both of its targets."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.optim
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

import zoo
from inference_comparisons.base import NotApplicable
from inference_comparisons.methods import get_method
from inference_comparisons.estimators.particles import log_joint
from inference_comparisons.runner import run_inference
from zoo.exact.hmm import (_viterbi_sequential, emission_log_prob, forward_log_evidence, one_step_log_likelihood,
                     sample_paths, smoothed_marginals, viterbi)

F64 = torch.float64


def random_params(num_states: int, batch: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    """Parameters drawn at random (not from the instance): exercise non-default values."""
    generator = torch.Generator().manual_seed(seed)
    K = num_states

    def simplex(*shape: int) -> torch.Tensor:
        g = -torch.rand(*shape, K, generator=generator, dtype=F64).log()  # Exp(1) -> Dirichlet(1)
        return g / g.sum(-1, keepdim=True)

    return {
        "initial": simplex(*batch),
        "transition": simplex(*batch, K),
        "locs": torch.randn(*batch, K, generator=generator, dtype=F64).sort(-1).values,
        "scales": 0.5 + torch.rand(*batch, K, generator=generator, dtype=F64),
    }


def safe_log(p: torch.Tensor) -> float:
    return math.log(float(p)) if float(p) > 0 else -math.inf


def brute_force(data: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[tuple[int, ...], float]:
    """log p(x, z | theta) for every path z, by plain Python over itertools.product."""
    K, T = params["initial"].shape[0], data.shape[0]
    out = {}
    for path in itertools.product(range(K), repeat=T):
        total = safe_log(params["initial"][path[0]])
        for t in range(1, T):
            total += safe_log(params["transition"][path[t - 1], path[t]])
        for t in range(T):
            mu, sigma = float(params["locs"][path[t]]), float(params["scales"][path[t]])
            total += -0.5 * ((float(data[t]) - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
        out[path] = total
    return out


def log_args(data: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    emission = emission_log_prob(data, params["locs"], params["scales"])
    return params["initial"].log(), params["transition"].log(), emission


# --- the two implementations ------------------------------------------------------------
def enumerated_log_density(model, condition: dict[str, torch.Tensor] | None = None) -> float:
    """log p(x, globals) of the markov-loop model, states summed out by TraceEnum_ELBO."""
    conditioned = poutine.condition(model, condition) if condition else model
    return -TraceEnum_ELBO(max_plate_nesting=0).loss(conditioned, lambda: None)


def test_markov_model_matches_discrete_hmm_latent():
    m = zoo.get_model("hmm", num_states=3)
    data = m.simulate(num_datapoints=200, seed=0).data
    target = m.target(data, "latent")
    collapsed = poutine.trace(lambda: m.collapsed_model(data, m.true_params())).get_trace().log_prob_sum()
    assert abs(enumerated_log_density(target.model) - float(collapsed)) < 1e-4
    assert abs(float(collapsed) - target.exact().log_evidence) < 1e-8


def test_markov_model_matches_discrete_hmm_posterior():
    m = zoo.get_model("hmm", num_states=3)
    data = m.simulate(num_datapoints=200, seed=1).data
    target = m.target(data, "posterior")
    draw = {k: v[0] for k, v in random_params(3, (1,), seed=2).items()}
    collapsed = poutine.trace(poutine.condition(target.collapsed_model, draw)).get_trace().log_prob_sum()
    assert abs(enumerated_log_density(target.model, draw) - float(collapsed)) < 1e-4


# --- exact algorithms against brute force ------------------------------------------------
@pytest.mark.parametrize("num_states,num_steps", [(2, 6), (3, 5)])
def test_exact_algorithms_match_brute_force(num_states, num_steps):
    batch = random_params(num_states, (3,), seed=num_states)
    data = torch.randn(num_steps, generator=torch.Generator().manual_seed(7), dtype=F64)
    log_z = forward_log_evidence(*log_args(data, batch))
    steps = one_step_log_likelihood(*log_args(data, batch))
    marginals = smoothed_marginals(*log_args(data, batch))
    paths, path_scores = viterbi(*log_args(data, batch))
    assert log_z.shape == (3,) and marginals.shape == (3, num_steps, num_states) and paths.shape == (3, num_steps)
    for s in range(3):
        params = {k: v[s] for k, v in batch.items()}
        joint = brute_force(data, params)
        expected_log_z = torch.tensor(list(joint.values()), dtype=F64).logsumexp(0)
        assert abs(float(log_z[s]) - float(expected_log_z)) < 1e-10
        assert abs(float(steps[s].sum()) - float(expected_log_z)) < 1e-10
        # The first one-step term is log p(x_1) = log sum_k initial_k N(x_1 | k).
        emission = emission_log_prob(data[:1], params["locs"], params["scales"])[0]
        first = (params["initial"].log() + emission).logsumexp(0)
        assert abs(float(steps[s, 0]) - float(first)) < 1e-12
        expected = torch.zeros(num_steps, num_states, dtype=F64)
        for path, value in joint.items():
            weight = math.exp(value - float(expected_log_z))
            for t, k in enumerate(path):
                expected[t, k] += weight
        torch.testing.assert_close(marginals[s], expected, atol=1e-12, rtol=0)
        best = max(joint, key=joint.get)
        assert tuple(paths[s].tolist()) == best
        assert abs(float(path_scores[s]) - joint[best]) < 1e-10
        sequential_path, sequential_score = _viterbi_sequential(*log_args(data, params))
        assert tuple(sequential_path.tolist()) == best
        assert abs(float(sequential_score) - joint[best]) < 1e-10


@pytest.mark.parametrize("num_steps", [1, 2, 5])
def test_viterbi_with_tied_paths_returns_a_maximiser(num_steps):
    """A symmetric chain on data at 0: the all-0 and all-1 paths tie (and more for T <= 2)."""
    params = {"initial": torch.tensor([0.5, 0.5], dtype=F64),
              "transition": torch.tensor([[0.8, 0.2], [0.2, 0.8]], dtype=F64),
              "locs": torch.tensor([-1.0, 1.0], dtype=F64), "scales": torch.ones(2, dtype=F64)}
    data = torch.zeros(num_steps, dtype=F64)
    joint = brute_force(data, params)
    path, score = viterbi(*log_args(data, params))
    assert path.shape == (num_steps,)
    assert abs(joint[tuple(path.tolist())] - max(joint.values())) < 1e-12
    assert abs(float(score) - max(joint.values())) < 1e-12


def test_exact_algorithms_with_impossible_transitions():
    """A left-to-right chain (zeros in the transition matrix) gives finite, exact answers."""
    params = {"initial": torch.tensor([1.0, 0.0, 0.0], dtype=F64),
              "transition": torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.6, 0.4], [0.0, 0.0, 1.0]], dtype=F64),
              "locs": torch.tensor([-1.0, 0.0, 1.0], dtype=F64), "scales": torch.ones(3, dtype=F64)}
    data = torch.tensor([-1.2, -0.5, 0.3, 0.2, 1.4], dtype=F64)
    joint = {path: v for path, v in brute_force(data, params).items() if v > -math.inf}
    log_z = torch.tensor(list(joint.values()), dtype=F64).logsumexp(0)
    assert abs(float(forward_log_evidence(*log_args(data, params))) - float(log_z)) < 1e-10
    marginals = smoothed_marginals(*log_args(data, params))
    assert torch.isfinite(marginals).all()
    expected = torch.zeros(5, 3, dtype=F64)
    for path, value in joint.items():
        for t, k in enumerate(path):
            expected[t, k] += math.exp(value - float(log_z))
    torch.testing.assert_close(marginals, expected, atol=1e-12, rtol=0)
    path, _ = viterbi(*log_args(data, params))
    assert tuple(path.tolist()) == max(joint, key=joint.get)
    samples = sample_paths(*log_args(data, params), num_samples=200)
    assert all(tuple(p) in joint for p in samples.tolist())  # never an impossible path


def test_smoothed_marginals_broadcast_over_parameter_draws():
    """Emissions shared by a batch of transition matrices: each draw gets its own marginals."""
    batch = random_params(2, (3,), seed=9)
    data = torch.randn(6, generator=torch.Generator().manual_seed(2), dtype=F64)
    log_emission = emission_log_prob(data, batch["locs"][0], batch["scales"][0])  # (T, K), no batch
    marginals = smoothed_marginals(batch["initial"].log(), batch["transition"].log(), log_emission)
    for s in range(3):
        single = smoothed_marginals(batch["initial"][s].log(), batch["transition"][s].log(), log_emission)
        torch.testing.assert_close(marginals[s], single, atol=1e-12, rtol=0)


def test_ffbs_path_frequencies_match_exact_posterior():
    """Every full path's sample frequency is within 5 binomial standard errors of its exact
    posterior probability (16 paths: family-wise false alarm rate < 1e-5)."""
    params = random_params(2, (), seed=11)
    data = torch.tensor([-1.0, 0.2, 0.4, 1.5], dtype=F64)
    joint = brute_force(data, params)
    log_z = torch.tensor(list(joint.values()), dtype=F64).logsumexp(0)
    num_samples = 20_000
    samples = sample_paths(*log_args(data, params), num_samples=num_samples,
                           generator=torch.Generator().manual_seed(0))
    assert samples.shape == (num_samples, 4) and samples.dtype == torch.long
    codes = (samples * torch.tensor([8, 4, 2, 1])).sum(-1)
    counts = torch.bincount(codes, minlength=16).to(F64)
    for path, value in joint.items():
        p = math.exp(value - float(log_z))
        code = sum(k * 2 ** (3 - t) for t, k in enumerate(path))
        se = math.sqrt(p * (1 - p) / num_samples)
        assert abs(float(counts[code]) / num_samples - p) <= 5 * se + 1e-12, path


def test_sample_paths_batched_over_parameter_draws():
    batch = random_params(3, (2,), seed=5)
    data = torch.randn(7, generator=torch.Generator().manual_seed(1), dtype=F64)
    samples = sample_paths(*log_args(data, batch), num_samples=4)
    assert samples.shape == (4, 2, 7) and samples.min() >= 0 and samples.max() <= 2


# --- targets: densities, marginals, pointwise likelihoods -------------------------------
def test_posterior_log_density_matches_pyro_log_joint():
    m = zoo.get_model("hmm", num_states=3)
    data = m.simulate(num_datapoints=50, seed=3).data
    target = m.target(data, "posterior")
    draws = random_params(3, (6,), seed=4)
    expected = log_joint(target.collapsed_model, draws, target.max_plate_nesting)
    torch.testing.assert_close(target.log_density(draws), expected, atol=1e-10, rtol=0)
    pointwise = target.pointwise_log_likelihood(draws)
    assert pointwise.shape == (6, 50)
    torch.testing.assert_close(pointwise.sum(-1), forward_log_evidence(*log_args(data, draws)), atol=1e-10, rtol=0)
    marginals = target.local_marginals(draws)["states"]
    assert marginals.shape == (6, 50, 3)
    torch.testing.assert_close(marginals.sum(-1), torch.ones(6, 50, dtype=F64))
    assert set(target.quantities(draws)) == {"initial", "transition", "locs", "scales"}


def test_latent_log_density_matches_pyro_log_joint():
    m = zoo.get_model("hmm")
    sim = m.simulate(num_datapoints=40, seed=4)
    target = m.target(sim.data, "latent")
    paths = sample_paths(*log_args(sim.data, m.true_params()), num_samples=5)
    draws = {site: paths[:, t] for t, site in enumerate(target.latent_sites)}
    expected = log_joint(target.collapsed_model, draws, target.max_plate_nesting)
    torch.testing.assert_close(target.log_density(draws), expected, atol=1e-10, rtol=0)
    # Probability-vector draws that are one-hot give the same numbers as the integers.
    one_hot = {s: torch.nn.functional.one_hot(v, 2).to(F64) for s, v in draws.items()}
    torch.testing.assert_close(target.log_density(one_hot), expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(target.pointwise_log_likelihood(one_hot), target.pointwise_log_likelihood(draws))
    assert target.pointwise_log_likelihood(draws).shape == (5, 40)
    torch.testing.assert_close(target.local_marginals(draws)["states"], torch.stack(list(one_hot.values()), 1))


def test_latent_exact_reference():
    m = zoo.get_model("hmm", num_states=3)
    sim = m.simulate(num_datapoints=60, seed=5)
    reference = m.reference(sim.data, target="latent")
    assert reference.exact and reference.log_evidence_se == 0.0 and reference.moments == {}
    states = reference.local_marginals["states"]
    assert states.shape == (60, 3)
    torch.testing.assert_close(states.sum(-1), torch.ones(60, dtype=F64))
    assert len(reference.provenance["viterbi_path"]) == 60
    # Well-separated states: the smoothed MAP state recovers most of the true path.
    assert (states.argmax(-1) == sim.true_latents["states"]).double().mean() > 0.8


def test_hand_written_guide_trains_with_enumeration():
    m = zoo.get_model("hmm")
    data = m.simulate(num_datapoints=30, seed=6).data
    pyro.clear_param_store()
    svi = pyro.infer.SVI(lambda: m.model(data), lambda: m.guide(data), pyro.optim.Adam({"lr": 0.02}),
                         TraceEnum_ELBO(max_plate_nesting=0))
    losses = [svi.step() for _ in range(5)]
    assert all(math.isfinite(loss) for loss in losses)
    pyro.clear_param_store()


# --- data and parameters ---------------------------------------------------------------
def test_simulate_and_datasets():
    m = zoo.get_model("hmm")
    sim = m.simulate(num_datapoints=25, seed=0)
    assert sim.data.shape == (25,) and sim.data.dtype == F64
    assert sim.true_latents["states"].shape == (25,)
    assert set(sim.true_params) == {"initial", "transition", "locs", "scales"}
    nile = m.load_dataset("nile")
    assert nile.shape == (100,) and abs(float(nile.mean())) < 1e-12 and abs(float(nile.std()) - 1) < 1e-12
    assert "nile" in m.info.datasets
    assert "hmm" in zoo.available_models()


@pytest.mark.parametrize("kwargs,match", [
    ({"num_states": 1}, "num_states"),
    ({"num_states": 11}, "num_states"),
    ({"transition": ((0.9, 0.2), (0.5, 0.5))}, r"transition row 0 must sum to 1.*1\.1"),
    ({"transition": ((0.9, 0.1),)}, "transition"),
    ({"initial": (0.3, 0.3)}, "initial"),
    ({"locs": (1.0, -1.0)}, "increasing"),
    ({"scales": (1.0, -1.0)}, "scales"),
    ({"mean_prior_scale": 0.0}, "mean_prior_scale"),
])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.get_model("hmm", **kwargs)


@pytest.mark.parametrize("data,match", [
    (torch.zeros(10, 2), "1-D"),
    (torch.tensor([0.0, float("nan"), 1.0]), "finite"),
    (torch.zeros(0), "at least one"),
])
def test_bad_data_raise(data, match):
    m = zoo.get_model("hmm")
    for target in ("posterior", "latent"):
        with pytest.raises(ValueError, match=match):
            m.target(data, target)


# --- the harness on both targets --------------------------------------------------------
@pytest.fixture(scope="module")
def short_sequence() -> tuple[zoo.ZooModel, torch.Tensor]:
    m = zoo.get_model("hmm")
    return m, m.simulate(num_datapoints=30, seed=0).data


@pytest.mark.parametrize("target,method,budget", [
    ("latent", "exact", 1),
    ("latent", "svi", 3),
    ("latent", "is_prior", 200),
    ("latent", "is_guide", 200),
    ("posterior", "svi", 10),
    ("posterior", "nuts", 8),
    ("posterior", "is_prior", 200),
])
def test_methods_run(short_sequence, target, method, budget):
    m, data = short_sequence
    # A short proposal fit for is_guide suffices to check the plumbing.
    result = run_inference(m, data, get_method(method).for_smoke_test(), budget, seed=0, target=target)
    assert result.local_marginals["states"].shape == (30, 2)
    assert torch.isfinite(result.local_marginals["states"]).all()
    if method != "nuts":
        assert math.isfinite(result.log_evidence)
    if target == "posterior" and method != "exact":
        assert all(torch.isfinite(moment.mean).all() for moment in result.moments.values())


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_hamiltonian_methods_not_applicable_to_latent(short_sequence, method):
    m, data = short_sequence
    with pytest.raises(NotApplicable):
        run_inference(m, data, method, 10, seed=0, target="latent")


def test_latent_svi_uses_per_step_categorical_guide(short_sequence):
    """The latent target's inferred sites are the per-step states, all discrete."""
    m, data = short_sequence
    target = m.target(data, "latent")
    assert target.latent_sites == tuple(f"state_{t}" for t in range(30))
    assert target.discrete_sites == target.latent_sites and target.continuous_sites == ()
    pyro.clear_param_store()
