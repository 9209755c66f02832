"""posteriordb's reference posteriors as a second, outside source of references: the zoo's
Stan-equivalent configuration has the Stan program's density, the project's own builder
agrees with Stan's reference draws, and the harness scores methods against them."""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import zoo
from zoo import references
from zoo.datasets import POSTERIORDB
from zoo.distributions import OrderedNormal, log_ordered_mass
from inference_comparisons.references.posteriordb import POSTERIORS, import_reference
from inference_comparisons import get_method
from inference_comparisons.schema import Cell
from inference_comparisons.sweep.cell import run_cell

MIXTURE = "posteriordb:low_dim_gauss_mix"
HMM = "posteriordb:hmm_example"
#: The builder's moments and posteriordb's must agree within this many combined standard errors.
Z = 4.0


def _configured(name: str, dataset: str):
    model = zoo.get_model(name).for_dataset(dataset)
    return model, model.load_dataset(dataset)


def _mixture():
    return _configured("gmm", MIXTURE)


def _stan_low_dim_gauss_mix(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """posteriordb's low_dim_gauss_mix.stan, line by line, at S draws (mu, sigma: (S, 2))::

        sigma ~ normal(0, 2);  mu ~ normal(0, 2);  theta ~ beta(5, 5);
        target += log_mix(theta, normal_lpdf(y[n] | mu[1], sigma[1]), normal_lpdf(y[n] | mu[2], sigma[2]));
    """
    prior = (stats.norm.logpdf(sigma, 0, 2).sum(-1) + stats.norm.logpdf(mu, 0, 2).sum(-1)
             + stats.beta.logpdf(theta, 5, 5))
    first = np.log(theta)[:, None] + stats.norm.logpdf(y[None], mu[:, :1], sigma[:, :1])
    second = np.log1p(-theta)[:, None] + stats.norm.logpdf(y[None], mu[:, 1:], sigma[:, 1:])
    return prior + np.logaddexp(first, second).sum(-1)


def test_the_mixture_configuration_has_the_stan_programs_density():
    """Up to a constant, which is known: the zoo's ordered prior is the order statistics
    (2! times Stan's unnormalised ordered density) and its half-normals are normalised on
    (0, inf) (2 times Stan's normal(0, 2) there), so zoo - Stan = 3 log 2 at every draw."""
    model, data = _mixture()
    target = model.target(data, "posterior")
    torch.manual_seed(0)
    draws = {site: prior.sample((64,)) for site, prior in model.priors().items()}
    draws["locs"][:8] = torch.tensor([[-2.7], [2.9]], dtype=torch.float64)  # and near the posterior
    zoo_density = target.log_density(draws).numpy()
    stan_density = _stan_low_dim_gauss_mix(data[:, 0].numpy(), draws["locs"][..., 0].numpy(),
                                           draws["scales"][..., 0].numpy(), draws["weights"][:, 0].numpy())
    np.testing.assert_allclose(zoo_density - stan_density, 3 * math.log(2), rtol=0, atol=1e-8)


def _stan_hmm_example(y: np.ndarray, theta: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """posteriordb's hmm_example.stan at S draws (theta: (S, 2, 2) rows theta1, theta2; mu:
    (S, 2)): its priors on mu, and its forward algorithm, whose gamma[1, k] =
    normal_lpdf(y[1] | mu[k], 1) has no initial distribution."""
    prior = stats.norm.logpdf(mu[:, 0], 3, 1) + stats.norm.logpdf(mu[:, 1], 10, 1)
    emission = stats.norm.logpdf(y[None, :, None], mu[:, None, :], 1)  # (S, T, K)
    gamma = emission[:, 0]
    for t in range(1, len(y)):  # acc[j] = gamma[t-1, j] + log theta[j, k] + normal_lpdf(y[t] | mu[k], 1)
        gamma = np.logaddexp.reduce(gamma[:, :, None] + np.log(theta), axis=1) + emission[:, t]
    return prior + np.logaddexp.reduce(gamma, axis=-1)


def test_the_hmm_configuration_has_the_stan_programs_density():
    """The zoo's HMM has an ``initial`` site that Stan's lacks. At initial = uniform its
    density is Stan's up to a known constant: -log 2 (Stan's forward pass starts from weights
    1, not 1/2) minus the log mass of the ordered positive region (the zoo normalises its
    truncated prior; Stan need not). The flat Dirichlets' densities are 1."""
    model, data = _configured("hmm", HMM)
    target = model.target(data, "posterior")
    torch.manual_seed(0)
    draws = {site: prior.sample((64,)) for site, prior in model.priors().items()}
    draws["initial"] = torch.full((64, 2), 0.5, dtype=torch.float64)
    zoo_density = target.log_density(draws).numpy()
    stan_density = _stan_hmm_example(data.numpy(), draws["transition"].numpy(), draws["locs"].numpy())
    log_mass = target.priors["locs"].log_mass
    assert -0.0014 < log_mass < -0.0013  # P(0 < mu1 < mu2) = Phi(3) - (tiny) under N(3,1) x N(10,1)
    np.testing.assert_allclose(zoo_density - stan_density, -math.log(2) - log_mass, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name,dataset", [("gmm", MIXTURE), ("hmm", HMM)])
def test_the_builder_agrees_with_posteriordbs_reference(name, dataset):
    """Two independent samplers (Stan's NUTS, 10 chains; this project's builder) on one
    posterior: every quantity of interest within Z combined standard errors."""
    model, data = _configured(name, dataset)
    outside, own = model.reference(data, source="posteriordb"), model.reference(data, source="zoo")
    assert outside.provenance["source"] == "posteriordb" and "source" not in own.provenance
    assert set(outside.moments) == set(own.moments) == set(model.target(data, "posterior").latent_sites)
    for key, theirs in outside.moments.items():
        ours = own.moments[key]
        tolerance = Z * (theirs.se ** 2 + ours.se ** 2).sqrt()
        assert ((theirs.mean - ours.mean).abs() <= tolerance).all(), (key, theirs.mean, ours.mean, tolerance)
        assert ((theirs.sd / ours.sd).log().abs() < 0.05).all(), (key, theirs.sd, ours.sd)
    assert math.isnan(outside.log_evidence) and math.isfinite(own.log_evidence)
    # posteriordb's own record of how the draws were made travels with them
    record = outside.provenance["posteriordb"]
    name_in_posteriordb = dataset.removeprefix(POSTERIORDB)
    assert record["name"] == f"{name_in_posteriordb}-{name_in_posteriordb}"
    assert record["checks_made"]["r_hat_below_1_01"]
    assert record["inference"]["method_arguments"]["chains"] == 10 and "BSD-3-Clause" in record["licence"]


@pytest.mark.parametrize("name,dataset", [("gmm", MIXTURE), ("hmm", HMM)])
def test_a_lookup_prefers_posteriordbs_reference_and_a_cell_is_scored_against_it(name, dataset):
    model, data = _configured(name, dataset)
    assert model.reference(data).provenance["source"] == "posteriordb"
    row = run_cell(Cell(name, "posterior", "laplace", 100, 0, dataset))
    assert row["status"] == "ok", row["message"]
    assert math.isfinite(row["mean_error"]) and math.isfinite(row["khat"])
    assert math.isnan(row["log_evidence_ref"])  # posteriordb's, which has no evidence; the zoo's build has one


def _fake_posteriordb(root, chains: list[dict[str, list[float]]], data: dict) -> None:
    """A posteriordb checkout holding low_dim_gauss_mix's data and the given draws."""
    def write_zip(path, payload):
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(path.name.removesuffix(".zip"), json.dumps(payload))
        path.write_bytes(buffer.getvalue())

    base = root / "posterior_database"
    write_zip(base / "data/data/low_dim_gauss_mix.json.zip", data)
    write_zip(base / "reference_posteriors/draws/draws/low_dim_gauss_mix-low_dim_gauss_mix.json.zip", chains)
    info = base / "reference_posteriors/draws/info/low_dim_gauss_mix-low_dim_gauss_mix.info.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({
        "inference": {"method": "stan_sampling", "method_arguments": {"chains": 2, "iter": 200, "warmup": 100,
                                                                      "thin": 1, "seed": 1}},
        "diagnostics": {}, "checks_made": {}, "added_by": "a test", "added_date": "2026-12-06",
        "versions": {"rstan_version": "rstan 0"}}))


def test_import_maps_stans_parameters_to_the_zoos_sites(tmp_path):
    model, data = _mixture()
    generator = np.random.default_rng(0)
    chains = [{"mu[1]": list(generator.normal(-2.7, 0.04, 100)), "mu[2]": list(generator.normal(2.9, 0.05, 100)),
               "sigma[1]": list(generator.normal(1.0, 0.03, 100)), "sigma[2]": list(generator.normal(1.0, 0.04, 100)),
               "theta": list(generator.normal(0.6, 0.02, 100))} for _ in range(2)]
    shipped = json.loads((references.DIRECTORY.parent / "datasets/posteriordb/low_dim_gauss_mix.json").read_text())
    _fake_posteriordb(tmp_path, chains, shipped)
    imported = import_reference(model, data, MIXTURE, tmp_path)

    def mean(key):
        return float(np.mean([value for chain in chains for value in chain[key]]))

    expected = {"weights": [mean("theta"), 1 - mean("theta")], "locs": [[mean("mu[1]")], [mean("mu[2]")]],
                "scales": [[mean("sigma[1]")], [mean("sigma[2]")]]}
    for key, values in expected.items():
        torch.testing.assert_close(imported.moments[key].mean, torch.tensor(values, dtype=torch.float64))
    assert imported.provenance["source"] == "posteriordb" and math.isnan(imported.log_evidence)
    assert imported.local_marginals["assignment"].shape == (1000, 2)

    shipped["y"][17] += 1e-3  # data that are not posteriordb's are refused
    _fake_posteriordb(tmp_path / "other", chains, shipped)
    with pytest.raises(ValueError, match="differs from posteriordb's data"):
        import_reference(model, data, MIXTURE, tmp_path / "other")


def test_bad_input_is_refused_with_what_would_be_accepted(tmp_path):
    default = zoo.get_model("gmm")
    with pytest.raises(ValueError, match=r"num_components=2.*for_dataset\('posteriordb:low_dim_gauss_mix'\)"):
        default.load_dataset(MIXTURE)
    model, data = _mixture()
    with pytest.raises(ValueError, match="unknown reference source 'stan'; accepted: posteriordb, zoo"):
        model.reference(data, source="stan")
    with pytest.raises(ValueError, match="not a posteriordb posterior the zoo expresses; accepted: posteriordb:"):
        import_reference(model, data, POSTERIORDB + "eight_schools", tmp_path)
    with pytest.raises(ValueError, match="neither a posteriordb checkout"):
        import_reference(model, data, MIXTURE, tmp_path)
    with pytest.raises(ValueError, match="the data given are not posteriordb:low_dim_gauss_mix's"):
        import_reference(model, data[:-1], MIXTURE, tmp_path)
    with pytest.raises(ValueError, match="scale_prior must be one of 'lognormal', 'half_normal', got 'gamma'"):
        zoo.get_model("gmm", scale_prior="gamma")
    with pytest.raises(ValueError, match="a half-normal has none"):
        zoo.get_model("gmm", scale_prior="half_normal", scale_prior_loc=1.0)
    assert set(POSTERIORS) == {"low_dim_gauss_mix", "hmm_example"}
    with pytest.raises(ValueError, match=r"scales \(0.5, 0.7\) contradict the known emission_scale 1.0"):
        zoo.get_model("hmm", emission_scale=1.0, scales=(0.5, 0.7))
    with pytest.raises(ValueError, match="emission_scale must be a positive number, got -1.0"):
        zoo.get_model("hmm", emission_scale=-1.0)
    with pytest.raises(ValueError, match=r"mean_prior_loc must be one number or 2 numbers .*got \(1.0, 2.0, 3.0\)"):
        zoo.get_model("hmm", mean_prior_loc=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="positive_means bounds K numbers"):
        zoo.get_model("gmm", positive_means=True)
    hmm, sequence = _configured("hmm", HMM)
    reason = get_method("em").not_applicable(hmm.target(sequence, "posterior"))
    assert reason and "relabel" in reason  # the truncated prior is not exchangeable


def test_default_models_keep_their_references():
    """The new hyperparameters default to today's priors, which stay out of the reference key."""
    for name in ("gmm", "hmm"):
        model = zoo.get_model(name)
        assert "scale_prior" not in model.reference_key("posterior")
        assert references.find(model, "posterior", model.simulate(200, 0).data) is not None


@pytest.mark.parametrize("locs,scale,positive,expected", [
    ((0.0, 0.0, 0.0), 1.0, False, 1 / 6),  # the order statistics: 1/K!
    ((0.0, 0.0, 0.0), 2.0, True, 1 / 48),  # and all positive too: 1/(2^K K!)
    ((0.3, 1.1), 0.7, False, stats.norm.cdf(0.8 / (0.7 * math.sqrt(2)))),  # P(X2 - X1 > 0)
])
def test_the_ordered_priors_mass_matches_closed_forms(locs, scale, positive, expected):
    mass = log_ordered_mass(torch.tensor(locs, dtype=torch.float64), scale, positive)
    assert abs(mass - math.log(expected)) < 1e-8


@pytest.mark.parametrize("locs", [(3.0, 10.0), (0.5, 0.2)])
def test_the_positive_ordered_prior_samples_its_density(locs):
    """K = 2 by quadrature: the mass P(0 < X1 < X2) and the mean of X1 under the truncated
    law, against 40,000 rejection draws within 5 Monte Carlo standard errors."""
    m1, m2 = locs
    mass = integrate.quad(lambda x: stats.norm.pdf(x, m1) * stats.norm.sf(x, m2), 0, 60, epsabs=1e-13)[0]
    mean_first = integrate.quad(lambda x: x * stats.norm.pdf(x, m1) * stats.norm.sf(x, m2), 0, 60, epsabs=1e-13)[0] / mass
    prior = OrderedNormal(torch.tensor(locs, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64), 2,
                          positive=True)
    assert abs(prior.log_mass - math.log(mass)) < 1e-8
    torch.manual_seed(0)
    draws = prior.sample((40_000,))
    assert bool(prior.support.check(draws).all())
    first = draws[:, 0]
    assert abs(first.mean().item() - mean_first) < 5 * first.std().item() / math.sqrt(len(first))
