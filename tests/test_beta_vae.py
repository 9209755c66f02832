"""beta-VAEs (Higgins et al. 2017): the shipped beta = 4 checkpoints, beta's place in the
training objective, the disentanglement measures against the swiss roll's known factors,
and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import zoo
from zoo import vae
from zoo.vae.disentanglement import (ACTIVE_THRESHOLD, FACTORS, correlation_matrix, disentanglement, measure,
                                     mutual_information_gap, probe_r2, swiss_roll_factors)

F64 = torch.float64
#: Every shipped checkpoint, as the VAE's datasets configure them: (dataset, beta).
CHECKPOINTS = sorted({(config["dataset"], config.get("beta", 1.0))
                      for config in zoo.model_class("vae").info.dataset_configs.values()})


def test_every_shipped_checkpoint_loads_with_its_beta_and_says_how_it_was_made():
    assert {("swiss_roll", 4.0), ("digits", 4.0)} <= set(CHECKPOINTS)
    digests = set()
    for dataset, beta in CHECKPOINTS:
        _, _, record = vae.load_checkpoint(dataset, beta=beta)
        assert record.get("beta", 1.0) == beta
        assert record["command"].startswith(f"python -m zoo.vae_tools train --dataset {dataset}")
        digests.add(vae.training.weights_digest(dataset, None, beta))
    assert len(digests) == len(CHECKPOINTS)  # each beta's decoder is its own model, with its own references


def test_beta_weights_exactly_the_kl_term():
    """The training program's Trace_ELBO loss on one minibatch, from one seed (so the same
    draws z ~ q), is -log p(x|z) + beta (log q(z|x) - log p(z)) summed: linear in beta, with
    slope the single-draw KL estimate log q(z|x) - log p(z), which is computed here by hand."""
    import pyro
    from pyro.infer import Trace_ELBO

    encoder, decoder, _ = vae.load_checkpoint("curve")
    batch = vae.training_data("curve")[:16]
    index = torch.arange(16)
    losses = {}
    for beta in (1.0, 2.0, 4.0):
        model, guide = vae.training.beta_elbo_program(encoder, decoder, 16, beta)
        pyro.set_rng_seed(0)
        losses[beta] = Trace_ELBO().loss(model, guide, batch, index)
    pyro.set_rng_seed(0)
    loc, scale = encoder(batch)
    z = torch.distributions.Normal(loc, scale).sample()
    kl = float((torch.distributions.Normal(loc, scale).log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum())
    assert losses[2.0] - losses[1.0] == pytest.approx(kl, rel=1e-9)
    assert losses[4.0] - losses[1.0] == pytest.approx(3 * kl, rel=1e-9)


def test_the_measures_on_known_codes():
    """Codes equal to the factors: MIG near 1 (the discretised estimator's upward bias for the
    unrelated dimension, ~(B-1)^2 / 2N nats, keeps it below), R^2 1, |corr| 1 on the diagonal.
    A 45-degree rotation: every code is as informative about each factor, MIG near 0, yet
    the linear probe still reads both. Independent noise: nothing."""
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(2000, 2, generator=generator, dtype=F64)
    mig, per_factor, information = mutual_information_gap(factors, factors)
    bias = (20 - 1) ** 2 / (2 * 2000)
    assert mig > 1 - 2 * bias / float(information.max()) and (per_factor > 0.9).all()
    torch.testing.assert_close(probe_r2(factors, factors), torch.ones(2, dtype=F64))
    correlation = correlation_matrix(factors, factors)
    torch.testing.assert_close(correlation.diagonal(), torch.ones(2, dtype=F64))
    assert correlation[0, 1] < 4 / math.sqrt(2000)  # two independent factors' sample correlation
    rotated = factors @ torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=F64) / math.sqrt(2)
    assert mutual_information_gap(rotated, factors)[0] < 0.05
    torch.testing.assert_close(probe_r2(rotated, factors), torch.ones(2, dtype=F64))
    noise = torch.randn(2000, 2, generator=generator, dtype=F64)
    assert mutual_information_gap(noise, factors)[0] < 0.05
    assert (probe_r2(noise, factors).abs() < 0.02).all()  # R^2 of a useless probe: about -2/N_half ± its noise


def test_the_bootstrap_standard_errors_match_the_spread_over_fresh_data():
    """The MIG's and the probe R^2's bootstrap standard errors against the sd of the same
    measures over 30 independent datasets of noisy, mixed codes: the log ratio within 3 of
    its standard error (about sqrt(1/(2*29) + 1/(2*199)), both sds' own sampling error)."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.3], [0.2, 1.0]], dtype=F64)

    def sample():
        factors = torch.randn(2000, 2, generator=generator, dtype=F64)
        return factors @ mixing + 0.5 * torch.randn(2000, 2, generator=generator, dtype=F64), factors

    replicates = [measure(*sample(), num_bootstrap=2) for _ in range(30)]
    one = measure(*sample())
    tolerance = 3 * math.sqrt(1 / (2 * 29) + 1 / (2 * 199))
    spread = torch.tensor([r.mig for r in replicates], dtype=F64).std()
    assert abs(math.log(one.mig_se / float(spread))) < tolerance
    r2_spread = torch.stack([r.probe_r2 for r in replicates]).std(0)
    assert ((one.probe_r2_se / r2_spread).log().abs() < tolerance).all()


def test_the_swiss_roll_factors_are_the_decoders_angle_and_height():
    truth = vae.ground_truth("swiss_roll", 500, seed=0)
    factors = swiss_roll_factors(truth.true_latents["z"])
    angle, height = factors.T
    clean = torch.stack([angle * torch.cos(angle) / 5, height, angle * torch.sin(angle) / 5], -1)
    assert (truth.data - clean).abs().max() < 6 * vae.data.GROUND_TRUTH_NOISE
    assert FACTORS == ("angle", "height")


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_disentanglement_of_the_shipped_swiss_roll_checkpoints(beta):
    """What the shipped checkpoints are: at beta = 1 both units are active; at beta = 4 the
    swiss roll's posterior has collapsed (every encoding at the prior, the decoder's noise sd
    about 1.3 on the roll's plane), so nothing is disentangled and the measures say 0."""
    measures = disentanglement(zoo.get_model("vae", dataset="swiss_roll", beta=beta))
    assert 0 <= measures.mig <= 1 and measures.correlation.shape == (2, 2) and measures.probe_r2.shape == (2,)
    assert ((measures.correlation >= 0) & (measures.correlation <= 1)).all()
    assert (measures.probe_r2 <= 1).all() and measures.num_datapoints == 2000
    assert int(measures.active.sum()) == (2 if beta == 1 else 0)
    if beta == 4:
        assert measures.mig == 0 and (measures.probe_r2.abs() < 0.02).all()


def test_an_inactive_unit_carries_no_information():
    """A unit whose mean barely varies (Var 1e-6 < 0.01) has collapsed. The raw, scale-free
    estimator still reads its residual signal as a perfect code of its factor; measure()
    counts it as carrying none, so only the active unit's factor is captured."""
    generator = torch.Generator().manual_seed(1)
    factors = torch.randn(2000, 2, generator=generator, dtype=F64)
    codes = factors * torch.tensor([1.0, 1e-3], dtype=F64)
    assert mutual_information_gap(codes, factors)[0] > 0.9
    measures = measure(codes, factors)
    assert measures.active.tolist() == [True, False] and ACTIVE_THRESHOLD == 0.01
    # the second factor's gap is the active unit's estimator bias alone, ~(B-1)^2 / 2N nats over H ~ 2.5 nats
    assert measures.mig_per_factor[0] > 0.9 and measures.mig_per_factor[1] < 2 * (20 - 1) ** 2 / (2 * 2000) / 2.5
    assert measures.probe_r2[0] == pytest.approx(1.0) and abs(float(measures.probe_r2[1])) < 0.02
    assert measures.correlation[1].abs().sum() == 0


def test_bad_input_is_named(tmp_path):
    for beta in (0.0, -1.0, math.inf, True):
        with pytest.raises(ValueError, match="beta must be a positive number"):
            zoo.get_model("vae", beta=beta)
    with pytest.raises(LookupError, match=r"vae-swiss_roll-beta2.pt; train one with .*--dataset swiss_roll --beta 2"):
        zoo.get_model("vae", dataset="swiss_roll", beta=2.0).networks()
    plain = str(vae.checkpoint_path("swiss_roll"))
    with pytest.raises(ValueError, match="trained with beta=1, and this model has beta=4"):
        zoo.get_model("vae", dataset="swiss_roll", beta=4.0, checkpoint=plain).reference_key("latent")
    with pytest.raises(ValueError, match="the IWAE objective has none"):
        vae.train("curve", objective="iwae", beta=4.0)
    with pytest.raises(ValueError, match="only the swiss_roll dataset has"):
        disentanglement(zoo.get_model("vae", dataset="digits"))
    with pytest.raises(ValueError, match=r"defined with beta=4.0, and this model has beta=1.0; use model.for_dataset"):
        zoo.get_model("vae", dataset="swiss_roll").load_dataset("swiss_roll-beta4")
    with pytest.raises(ValueError, match="same N >= 4"):
        probe_r2(torch.zeros(5, 2), torch.zeros(4, 2))


def test_the_reports_gap_section_reads_the_decomposition_off_the_rows():
    """Two problems (two beta checkpoints), made-up rows: the gaps are the differences of the
    reference and the two methods' ELBOs at the refinement's largest budget, averaged over
    seeds, with standard errors in quadrature; a problem without both methods has no row."""
    import pandas as pd

    from inference_comparisons.report.gaps import inference_gap_section, inference_gap_table
    from inference_comparisons.schema import COLUMNS

    def row(dataset, method, budget, seed, elbo, se, status="ok"):
        values = dict.fromkeys(COLUMNS, math.nan)
        values.update(model="vae", dataset=dataset, target="latent", method=method, budget=budget, seed=seed,
                      status=status, log_evidence=elbo, log_evidence_se=se, log_evidence_ref=-100.0,
                      log_evidence_ref_se=0.3)
        return values

    table = pd.DataFrame([
        row("swiss_roll", "svi_amortised", 1000, 0, -130.0, 0.4), row("swiss_roll", "svi_amortised", 1000, 1, -132.0, 0.4),
        row("swiss_roll", "svi_semi_amortised", 30, 0, -125.0, 0.2),
        row("swiss_roll", "svi_semi_amortised", 300, 0, -110.0, 0.2),
        row("swiss_roll", "svi_semi_amortised", 300, 1, -112.0, 0.2),
        row("swiss_roll-beta4", "svi_amortised", 1000, 0, -150.0, 0.4),
        row("swiss_roll-beta4", "svi_semi_amortised", 300, 0, math.nan, math.nan, status="failed"),
    ])
    gaps = inference_gap_table(table)
    assert gaps["problem"].tolist() == ["vae / swiss_roll / latent"]
    (gap,) = gaps.itertuples(index=False)
    assert gap.approximation_gap == pytest.approx(-100 + 111) and gap.amortisation_gap == pytest.approx(-111 + 131)
    assert gap.approximation_gap_se == pytest.approx(math.hypot(0.3, 0.2 / math.sqrt(2)))
    assert gap.amortisation_gap_se == pytest.approx(math.hypot(0.2, 0.4) / math.sqrt(2))
    assert gap.refined_budget == 300 and gap.seeds == 2
    lines = inference_gap_section(table)
    assert lines[0] == "## Inference gaps of the amortised targets" and any("11 ± " in line for line in lines)
    assert inference_gap_section(table[table["method"] != "svi_amortised"]) == []
