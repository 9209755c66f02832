"""The VAE on its small shipped checkpoints: reproducible checkpoints, reference evidence
against independent estimators (and, for the 1-D curve, exact quadrature), the inference-gap
decomposition, IWAE tightening with K, the latent-space tools and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import zoo
from zoo import references, vae
from zoo.vae import latent
from zoo.vae.quadrature import grid_posterior
from inference_comparisons import run_inference
from inference_comparisons.references import build_amortised_reference

#: Standard errors a Monte Carlo estimate may differ by before a test calls it a bug.
Z_TOLERANCE = 4.0


@pytest.fixture(scope="module")
def curve():
    return zoo.get_model("vae")


@pytest.fixture(scope="module")
def curve_data(curve):
    return curve.simulate(num_datapoints=200, seed=0).data  # the sweep's default data


def quadrature(model, data, half_width=8.0, num=20001):
    """Exact (to grid error ~1e-10) log p(x_n) and posterior mean/sd of a 1-D latent."""
    z = torch.linspace(-half_width, half_width, num, dtype=torch.float64)[:, None, None]
    _, decoder = model.networks()
    log_joint = torch.distributions.Normal(0.0, 1.0).log_prob(z[..., 0]) + decoder.distribution(z).log_prob(data)
    log_evidence = log_joint.logsumexp(0) + math.log(2 * half_width / (num - 1))
    weights = (log_joint - log_joint.logsumexp(0)).exp()
    mean = (weights * z[..., 0]).sum(0)
    sd = (weights * (z[..., 0] - mean) ** 2).sum(0).sqrt()
    return log_evidence, mean, sd


def test_checkpoints_are_small_and_say_how_they_were_made():
    for dataset in vae.SPECS:
        path = vae.checkpoint_path(dataset)
        assert path.stat().st_size < 300_000
        first = vae.load_checkpoint(dataset)
        payload = torch.load(path, weights_only=True)
        assert payload["record"]["command"].startswith("python -m zoo.vae_tools train")
        for name, value in payload["decoder"].items():
            torch.testing.assert_close(first[1].state_dict()[name], value.to(torch.float64), rtol=0, atol=0)
    # The tests never train (issue: shipped checkpoints only); the training objective is
    # checked without training in test_beta_vae.py, and the record says how to retrain.


def test_stored_reference_agrees_with_its_cross_check_and_with_quadrature(curve, curve_data):
    """The importance-sampled reference the builder stored for the curve (the path of a VAE
    with more than two latent dimensions) against its cross-check and the exact quadrature."""
    reference = references.load(curve, "latent", curve_data)
    provenance = reference.provenance
    combined = math.hypot(reference.log_evidence_se, provenance["log_evidence_cross_check_se"])
    assert abs(reference.log_evidence - provenance["log_evidence_cross_check"]) < Z_TOLERANCE * combined
    assert provenance["diagnostics"]["khat"] < 0.5
    exact, mean, sd = quadrature(curve, curve_data)
    assert abs(reference.log_evidence - float(exact.sum())) < Z_TOLERANCE * reference.log_evidence_se
    moments = reference.moments["z"]
    z_scores = (moments.mean[:, 0] - mean) / moments.se[:, 0]
    # 200 standardised errors: their mean square should be near 1 (it is a sum of squares
    # of ~N(0, 1) variables, 200 of them: sd of the mean square ~ 0.1).
    assert float(z_scores.pow(2).mean()) < 2.0
    torch.testing.assert_close(moments.sd[:, 0], sd, rtol=0.05, atol=1e-3)


def test_stored_reference_matches_a_quick_recomputation(curve, curve_data):
    quick = build_amortised_reference(curve, curve_data, num_chains=0, num_particles=2_000,
                                      num_moment_particles=1_000, enforce_gates=False)
    stored = references.load(curve, "latent", curve_data)
    combined = math.hypot(quick.log_evidence_se, stored.log_evidence_se)
    assert abs(quick.log_evidence - stored.log_evidence) < Z_TOLERANCE * combined


@pytest.mark.parametrize("dataset,beta", [("swiss_roll", 1.0), ("digits", 1.0)])
def test_the_exact_latent_answer_matches_adaptive_quadrature(dataset, beta):
    """Every shipped decoder has 1 or 2 latent dimensions, so its latent target is exact by
    quadrature on a fixed grid. Checked here against scipy's adaptive dblquad, an independent
    integrator, on one data point (the swiss roll's posteriors are the sharpest shipped:
    sd down to 0.05), over the posterior mean ± 25 sd (a digit's posterior can have a second
    mode: ± 10 sd missed 1e-6 of one's mass); and the grid's own checks."""
    from scipy import integrate

    model = zoo.get_model("vae", dataset=dataset, beta=beta)
    data = model.load_dataset(dataset)[:1]
    problem = model.target(data, "latent")
    reference = problem.exact()
    assert reference.exact and reference.provenance["grid_error"] < 1e-4 and reference.provenance["edge_mass"] < 1e-8
    _, decoder = model.networks()
    means, sds = reference.moments["z"].mean, reference.moments["z"].sd
    for n in range(len(data)):
        x = data[n]

        def log_joint(z2: float, z1: float) -> float:
            z = torch.tensor([[z1, z2]], dtype=torch.float64)
            with torch.no_grad():
                return float(torch.distributions.Normal(0.0, 1.0).log_prob(z).sum() + decoder.distribution(z).log_prob(x))

        low = (means[n] - 25 * sds[n]).clamp_min(-8).tolist()
        high = (means[n] + 25 * sds[n]).clamp_max(8).tolist()
        shift = log_joint(float(means[n, 1]), float(means[n, 0]))  # keep the integrand near 1
        value, error = integrate.dblquad(lambda z2, z1: math.exp(log_joint(z2, z1) - shift), low[0], high[0],
                                         low[1], high[1], epsabs=1e-12, epsrel=1e-10)
        per_point = float(grid_posterior(decoder, x[None]).log_evidence[0])
        assert abs(per_point - (shift + math.log(value))) < 1e-6, (n, per_point, shift + math.log(value), error)
    assert reference.log_evidence == pytest.approx(float(grid_posterior(decoder, data).log_evidence.sum()))


def test_inference_gaps_are_finite_with_standard_errors(curve, curve_data):
    gaps = vae.inference_gaps(curve, curve_data[:100], num_particles=2_000, num_elbo_samples=1_000, num_steps=200)
    print(f"\ncurve, 100 points: log p(x) {gaps.log_evidence:.3f}, ELBO(best Gaussian) {gaps.elbo_optimal:.3f}, "
          f"ELBO(encoder) {gaps.elbo_amortised:.3f}; approximation gap {gaps.approximation_gap:.3f} "
          f"+- {gaps.approximation_gap_se:.3f}, amortisation gap {gaps.amortisation_gap:.3f} "
          f"+- {gaps.amortisation_gap_se:.3f} nats per data point")
    for value in gaps[:7]:
        assert math.isfinite(value)
    assert gaps.approximation_gap_se > 0 and gaps.amortisation_gap_se > 0
    # Both gaps are non-negative in expectation; the decomposition adds up by construction.
    assert gaps.approximation_gap > -Z_TOLERANCE * gaps.approximation_gap_se
    assert gaps.amortisation_gap > -Z_TOLERANCE * gaps.amortisation_gap_se
    total = gaps.log_evidence - gaps.elbo_amortised
    assert total == pytest.approx(gaps.approximation_gap + gaps.amortisation_gap, abs=1e-9)


def test_iwae_bound_tightens_with_the_number_of_particles(curve, curve_data):
    """E[IWAE_K] averaged over these 200 data points rises with K (Burda et al. 2016). Each
    K gets 10^4 weights per data point split into 10^4 / K independent bounds; the standard
    error is the Monte Carlo error of their mean given the data."""
    torch.manual_seed(0)
    means, ses = {}, {}
    for k in (1, 10, 100, 1000):
        replicates = 10_000 // k
        log_weights = curve.log_weights(curve_data, k * replicates).reshape(replicates, k, -1)
        bounds = log_weights.logsumexp(1) - math.log(k)  # (replicates, N)
        means[k] = float(bounds.mean())
        ses[k] = float((bounds.var(0) / replicates).sum().sqrt() / bounds.shape[1])
    print("\nIWAE bound per data point (mean, se):", {k: (round(means[k], 4), round(ses[k], 4)) for k in means})
    ks = sorted(means)
    for small, large in zip(ks[:-1], ks[1:]):
        assert means[large] - means[small] > -Z_TOLERANCE * math.hypot(ses[small], ses[large]), (small, large)
    assert means[1000] - means[1] > Z_TOLERANCE * math.hypot(ses[1], ses[1000])


def test_amortised_methods_through_the_harness(curve, curve_data):
    reference = curve.reference(curve_data, "latent")
    amortised = run_inference(curve, curve_data, "svi_amortised", budget=1000, seed=0, target="latent")
    iwae = run_inference(curve, curve_data, "iwae", budget=1000, seed=0, target="latent")
    semi = run_inference(curve, curve_data, "svi_semi_amortised", budget=100, seed=0, target="latent")
    slack = Z_TOLERANCE * math.hypot(amortised.log_evidence_se, iwae.log_evidence_se)
    assert amortised.log_evidence < iwae.log_evidence + slack
    assert iwae.log_evidence < reference.log_evidence + Z_TOLERANCE * math.hypot(
        iwae.log_evidence_se, reference.log_evidence_se)
    # Refining per data point from the encoder's output does not lose ELBO.
    assert semi.log_evidence > amortised.log_evidence - Z_TOLERANCE * math.hypot(
        semi.log_evidence_se, amortised.log_evidence_se)


def test_tools_write_pngs(tmp_path, request):
    import matplotlib

    # The svg backend stands in for a Jupyter session's inline one: the tools must not switch it.
    request.addfinalizer(lambda previous=matplotlib.get_backend(): matplotlib.use(previous))
    matplotlib.use("svg")
    digits = zoo.get_model("vae", dataset="digits")
    images, labels = vae.digits_split("test")
    paths = [
        latent.traversals(digits, tmp_path / "traversals.png"),
        latent.interpolation(digits, images[0], images[1], tmp_path / "interpolation.png"),
        latent.latent_arithmetic(digits, images, labels, tmp_path / "arithmetic.png"),
        latent.prior_grid(digits, tmp_path / "grid.png", data=images),
    ]
    curve = zoo.get_model("vae")
    paths += [latent.traversals(curve, tmp_path / "curve_traversals.png"),
              latent.prior_grid(curve, tmp_path / "curve_grid.png", data=curve.load_dataset("curve"))]
    accuracy = latent.linear_probe(digits, tmp_path / "probe.png")
    print(f"\nlinear probe accuracy on 2-D digit encodings: {accuracy:.3f}")
    assert accuracy > 0.3  # chance is 0.1
    for path in paths + [tmp_path / "probe.png", tmp_path / "grid_encodings.png"]:
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == "svg"
    with pytest.raises(ValueError, match="labelled images"):
        latent.linear_probe(curve)


def test_bad_input_is_named():
    digits = zoo.get_model("vae", dataset="digits")
    with pytest.raises(ValueError, match=r"8x8 \(64 pixels\).*got shape \(3, 28, 28\)"):
        digits.validate(torch.zeros(3, 28, 28))
    with pytest.raises(ValueError, match=r"got shape \(3, 10\)"):
        digits.validate(torch.zeros(3, 10))
    with pytest.raises(ValueError, match=r"binary pixels \(0 or 1\); found 0.5 at index \[1, 2\]"):
        bad = torch.zeros(3, 64)
        bad[1, 2] = 0.5
        digits.validate(bad)
    assert digits.validate(torch.ones(2, 8, 8)).shape == (2, 64)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; accepted: curve, swiss_roll, digits"):
        zoo.get_model("vae", dataset="mnist")
    with pytest.raises(ValueError, match="2 column"):
        zoo.get_model("vae").validate(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="unknown target 'posterior'; accepted: latent"):
        zoo.get_model("vae").target(torch.zeros(4, 2), "posterior")
    with pytest.raises(ValueError, match="objective must be 'elbo' or 'iwae'"):
        vae.train("curve", objective="renyi")


def test_other_datasets_load_and_simulate():
    for dataset in ("swiss_roll", "digits"):
        model = zoo.get_model("vae", dataset=dataset)
        data = model.load_dataset(dataset)
        assert data.shape[1] == model.spec.data_dim
        problem = model.target(data[:10], "latent")
        assert torch.isfinite(problem.log_density({"z": torch.zeros(2, 10, model.spec.latent_dim,
                                                                   dtype=torch.float64)})).all()
        sim = model.simulate(5, seed=0)
        assert sim.true_latents["z"].shape == (5, model.spec.latent_dim)
    truth = vae.ground_truth("curve", 5, seed=0)
    z = truth.true_latents["z"][:, 0]
    assert (truth.data[:, 1] - torch.sin(2 * z)).abs().max() < 0.3


def test_reference_builder_on_a_two_dimensional_bernoulli_latent():
    """The per-datapoint reference path on the digits decoder (2-D z, Bernoulli pixels):
    its two independent evidence estimators agree within their standard errors."""
    digits = zoo.get_model("vae", dataset="digits")
    images = digits.load_dataset("digits")[:10]
    built = build_amortised_reference(digits, images, num_chains=0, num_particles=5_000,
                                      num_moment_particles=2_000, enforce_gates=False)
    check = built.provenance["log_evidence_cross_check"]
    combined = math.hypot(built.log_evidence_se, built.provenance["log_evidence_cross_check_se"])
    assert abs(built.log_evidence - check) < Z_TOLERANCE * combined
    assert built.moments["z"].mean.shape == (10, 2) and torch.isfinite(built.moments["z"].se).all()



def test_gaps_command_prints_the_decomposition_with_standard_errors():
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "zoo.vae_tools", "gaps", "--dataset", "curve",
                                "--num-datapoints", "5"], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    lines = {line.strip().split("  ")[0]: line for line in completed.stdout.splitlines()}
    assert "±" in lines["approximation gap"] and "±" in lines["amortisation gap"]
