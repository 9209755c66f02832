"""Simulation-based calibration: prior simulation in the model contract, the uniformity test
and its bands, ranks from every kind of result, and SBC of the exact answers (the check of
the check) with a deliberately overconfident method that must fail (its power)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from inference_comparisons import NotApplicable, ResultKind, run_inference
from inference_comparisons.runner import run_on_target
from inference_comparisons.calibration import (CalibrationError, calibrate, ecdf_band, independent_draws, ranks_of,
                                               uniformity_pvalue)
from inference_comparisons.methods.exact import Exact
from inference_comparisons.report import report_from_store

from flaky_executor import FlakyExecutor

POSTERIOR_MODELS = [m for m in zoo.available_models() if "posterior" in zoo.get_model(m).info.targets]
EXACT_LATENT = [m for m in zoo.available_models() if "latent" in zoo.get_model(m).info.targets
                and zoo.get_model(m).target(zoo.get_model(m).simulate(5, 0).data, "latent").has_exact]


# --- prior simulation --------------------------------------------------------------------------
@pytest.mark.parametrize("name", POSTERIOR_MODELS)
def test_prior_simulation_is_reproducible_and_keeps_the_draw(name):
    model = zoo.get_model(name)
    first, again = model.prior_simulation(20, seed=4), model.prior_simulation(20, seed=4)
    assert torch.equal(first.data, again.data)
    assert not torch.equal(first.data, model.prior_simulation(20, seed=5).data)
    problem = model.target(first.data, "posterior")
    truth = problem.truth(first)
    # The draw survives the trip through the constructor's fields, and has a finite density.
    assert set(truth) == set(problem.latent_sites)
    rebuilt = model.with_params({site: value[0] for site, value in truth.items()}).true_params()
    for site, value in truth.items():
        assert torch.allclose(rebuilt[site], value[0], atol=1e-12, rtol=0), site
    assert torch.isfinite(problem.log_density(truth)).all()


def test_prior_simulation_redraws_degenerate_draws_and_says_when_it_cannot(monkeypatch):
    model = zoo.get_model("state_space")
    original, calls = type(model).with_params, []

    def refuse_twice(self, params):
        calls.append(params)
        if len(calls) <= 2:
            raise ValueError("a variance underflowed")
        return original(self, params)

    monkeypatch.setattr(type(model), "with_params", refuse_twice)
    simulation = model.prior_simulation(10, seed=0)
    assert len(calls) == 3 and torch.equal(simulation.true_params["state_variance"], calls[2]["state_variance"])
    monkeypatch.setattr(type(model), "with_params", lambda self, params: (_ for _ in ()).throw(ValueError("no")))
    with pytest.raises(RuntimeError, match="100 prior draws in a row were degenerate"):
        model.prior_simulation(10, seed=0)


# --- the uniformity test --------------------------------------------------------------------------
def test_uniformity_test_holds_its_level_and_has_power():
    """Under the null the p-values are uniform: the share below 0.05 of 400 tests on uniform
    ranks is within 4 binomial standard errors of 0.05. U-shaped ranks (overconfidence) and
    ranks piled to one side (bias) of the same size are rejected."""
    generator = np.random.default_rng(0)
    null = np.array([uniformity_pvalue(generator.integers(0, 100, 200), 99) for _ in range(400)])
    assert abs((null < 0.05).mean() - 0.05) <= 4 * math.sqrt(0.05 * 0.95 / 400)
    overconfident = np.minimum(99, (generator.beta(0.5, 0.5, 200) * 100).astype(int))
    biased = np.minimum(99, (generator.beta(1.5, 1.0, 200) * 100).astype(int))
    assert uniformity_pvalue(overconfident, 99) < 0.01 and uniformity_pvalue(biased, 99) < 0.01


def test_ecdf_band_holds_uniform_ranks_and_not_skewed_ones():
    generator = np.random.default_rng(1)
    band = ecdf_band(generator.integers(0, 100, 200), 99)
    assert band.grid.shape == band.difference.shape == band.lower.shape == (99,)
    assert (band.lower < 0).all() and (band.upper > 0).all()
    skewed = ecdf_band(np.minimum(99, (generator.beta(2.0, 1.0, 200) * 100).astype(int)), 99)
    assert ((skewed.difference < skewed.lower) | (skewed.difference > skewed.upper)).any()


def test_uniformity_test_refuses_bad_ranks():
    with pytest.raises(ValueError, match=r"integers in 0\.\.9"):
        uniformity_pvalue(np.array([0, 3, 10]), 9)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        uniformity_pvalue(np.array([], dtype=int), 9)
    with pytest.raises(ValueError, match="alpha"):
        ecdf_band(np.array([1, 2]), 9, alpha=1.5)


# --- ranks ------------------------------------------------------------------------------------------
def test_ties_are_broken_uniformly_at_random():
    """A truth equal to every one of L draws gets each rank 0..L equally often."""
    generator = torch.Generator().manual_seed(0)
    draws, truth = {"z": torch.ones(9, 20_000)}, {"z": torch.ones(1, 20_000)}
    counts = torch.bincount(ranks_of(truth, draws, generator)["z"], minlength=10).double()
    expected = 20_000 / 10
    assert ((counts - expected).abs() <= 5 * math.sqrt(expected)).all()


def test_independent_draws_by_result_kind():
    model = zoo.get_model("state_space")
    data = model.simulate(20, 0).data
    generator = torch.Generator().manual_seed(0)
    exact = run_inference(model, data, "exact", 1, target="latent")
    assert independent_draws(exact, 99, generator)["states"].shape == (99, 20, 1)
    particles = run_inference(model, data, "is_prior", 500, target="posterior")
    assert particles.kind is ResultKind.IMPORTANCE
    assert independent_draws(particles, 99, generator)["state_variance"].shape == (99, 1)
    chains = run_inference(model, data, "nuts", 60, target="posterior")
    with pytest.raises(CalibrationError, match="fewer than the 99 draws a rank needs; raise the budget"):
        independent_draws(chains, 99, generator)
    # An ESS below the number of chains thins every chain to nothing (a step longer than a
    # chain): the same clear error, as a gmm simulation for nuts_lockstep once met.
    # R-hat says whether more draws would mend it (chains that agree) or not (in different modes).
    starved = dataclasses.replace(chains, diagnostics=dataclasses.replace(chains.diagnostics, ess_min=1.5,
                                                                          rhat_max=1.26))
    with pytest.raises(CalibrationError, match=r"gives 0 roughly independent draws \(of 60, ESS 2, R-hat 1.26\)"):
        independent_draws(starved, 99, generator)
    point = run_inference(model, data, "map", 10, target="posterior")
    with pytest.raises(CalibrationError, match="a point estimate"):
        independent_draws(point, 99, generator)


# --- SBC itself ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXACT_LATENT)
def test_exact_latent_answers_pass_sbc(name):
    """The check of the check: 200 simulations of each exact latent posterior, p >= 0.01
    (Bonferroni over every scalar quantity), as the issue sets it."""
    calibration = calibrate(name, "exact", 1, target="latent", num_simulations=200, num_datapoints=20)
    assert calibration.num_simulations == 200 and not calibration.failures
    assert calibration.pvalue() >= 0.01, calibration.pvalues()


class Overconfident(Exact):
    """The exact posterior with every draw pulled halfway to its mean: a guide whose sd is
    halved, built for this test only."""

    name = "overconfident"

    def run(self, target, budget, seed):
        result = super().run(target, budget, seed)
        draws = {site: value.mean(0) + 0.5 * (value - value.mean(0)) for site, value in result.draws.items()}
        return dataclasses.replace(result, kind=ResultKind.INDEPENDENT, draws=draws)


@pytest.mark.parametrize("name", ["state_space", "factor_analysis"])
def test_a_halved_sd_fails_sbc(name):
    """The power: the same check on the overconfident twin rejects it, far below 0.01."""
    calibration = calibrate(name, Overconfident(), 1, target="latent", num_simulations=100, num_datapoints=20)
    assert calibration.pvalue() < 1e-3


def test_bad_calibration_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="num_draws must be an integer of at least 2"):
        calibrate("state_space", "exact", 1, target="latent", num_draws=1)
    with pytest.raises(ValueError, match="num_simulations must be an integer of at least 1"):
        calibrate("state_space", "exact", 1, target="latent", num_simulations=0)
    with pytest.raises(NotApplicable, match="a point estimate: no draws to rank"):
        calibrate("state_space", "map", 10, num_simulations=2, num_datapoints=10)
    with pytest.raises(NotApplicable, match="no closed form"):
        calibrate("state_space", "exact", 1, target="posterior", num_simulations=2)
    with pytest.raises(ValueError, match="unknown target"):
        calibrate("state_space", "exact", 1, target="prior")


def test_a_failed_simulation_is_recorded_and_the_others_go_on():
    """A method whose draws are too few fails each simulation with its message; calibration
    records them and returns."""
    calibration = calibrate("state_space", "nuts", 20, num_simulations=2, num_datapoints=10)
    assert calibration.num_simulations == 0 and set(calibration.failures) == {0, 1}
    assert all("raise the budget" in message for message in calibration.failures.values())


class Scarce(Exact):
    """The exact posterior, but only ``budget`` of its draws: short of the draws a rank needs
    at a small budget, as MCMC with too small an ESS (built for this test only)."""

    name = "scarce"

    def run(self, target, budget, seed):
        result = super().run(target, budget, seed)
        return dataclasses.replace(result, kind=ResultKind.INDEPENDENT,
                                   draws={site: value[:budget] for site, value in result.draws.items()})


def test_a_simulation_short_of_draws_is_run_again_at_a_raised_budget_up_to_the_ceiling(tmp_path):
    """Budget 30 gives 30 of the 99 draws a rank needs: with max_budget 120 each simulation
    runs again at 60, then 120, and is ranked; with 100 it stops at 60 and fails. The raised
    ranks of an exact posterior stay uniform (raising depends on the data alone), the store
    keeps every attempt, a rerun runs nothing, and the report counts each simulation once."""
    options = dict(target="latent", num_simulations=40, num_datapoints=10, scheduler="inprocess")
    capped = calibrate("state_space", Scarce(), 30, max_budget=100, **options)
    assert capped.simulations == () and capped.raised == dict.fromkeys(range(40), 60)
    assert all("at budget 60 gives 60" in message for message in capped.failures.values())
    raised = calibrate("state_space", Scarce(), 30, max_budget=120, out=tmp_path, **options)
    assert raised.simulations == tuple(range(40)) and not raised.failures
    assert raised.raised == dict.fromkeys(range(40), 120) and raised.pvalue() >= 0.01
    rows = _rows(tmp_path)
    assert len(rows) == 120 and rows["cell_id"].is_unique and (rows["status"] == "ok").sum() == 40
    again = calibrate("state_space", Scarce(), 30, max_budget=120, out=tmp_path, **options)
    assert len(_rows(tmp_path)) == 120
    for name, values in again.ranks.items():
        assert np.array_equal(values, raised.ranks[name])
    report_from_store(tmp_path)
    table = pd.read_csv(tmp_path / "calibration.csv").iloc[0]
    assert (table["simulations"], table["failed"], table["raised"], table["max_run_budget"]) == (40, 0, 40, 120)
    assert "| 30 (40 raised, up to 120) |" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="max_budget 20 is below the budget 30"):
        calibrate("state_space", Scarce(), 30, max_budget=20, **options)


def test_a_raised_budget_is_the_power_of_two_the_ess_asks_for_within_the_ceiling():
    """ESS grows with the draws: an ESS of 42 for 99 draws (and a quarter to spare) asks for
    4x the budget, of 10 for 16x (here capped at the ceiling's 8x), of 110 (which the
    thinning's rounding left short) for 2x; without an ESS, twice; at the ceiling, not
    short of draws, or with an ESS that raising did not raise, no further attempt."""
    from inference_comparisons.calibration.run import SimulationTask

    task = SimulationTask(zoo.get_model("hmm"), "posterior", Exact(), 4096, 30, 99, 0, 0)
    short = {"status": "failed", "message": "CalibrationError: ... fewer than the 99 draws a rank needs; ..."}
    budgets = {ess: task.raised({**short, "ess": ess}, 32768).run_budget for ess in (42, 10, 110, None, math.nan)}
    assert budgets == {42: 16384, 10: 32768, 110: 8192, None: 8192, math.nan: 8192}
    assert task.raised({**short, "ess": 10}, 32768).raised({**short, "ess": 70}, 32768) is None
    # An ESS that does not grow with the budget (by the square root of its factor) is not
    # raised again: chains in different modes; one that does is.
    fourfold = task.raised({**short, "ess": 42}, 65536)
    assert fourfold.raised({**short, "ess": 45}, 65536) is None
    assert fourfold.raised({**short, "ess": 90}, 65536).run_budget == 32768
    assert task.raised({**short, "ess": 50}, 4096) is None
    assert task.raised({"status": "failed", "message": "RuntimeError: boom", "ess": 10}, 32768) is None
    assert task.raised({"status": "ok", "message": "", "ess": 500}, 32768) is None


class _Crashes(Exact):
    """``exact``, but its worker process dies (module level: pickled to the pool)."""

    def run(self, target, budget, seed):
        os._exit(3)


def test_a_simulation_whose_worker_dies_is_retried_then_failed_and_the_others_go_on():
    """As the sweep's cells: a dead worker costs its simulation one retry; dying again, it
    is a failure with the message, and the run goes on."""
    options = dict(target="latent", num_simulations=3, num_datapoints=10)
    retried = calibrate("hmm", "exact", 1, executor=FlakyExecutor(1), **options)
    assert retried.simulations == (0, 1, 2) and not retried.failures
    # Five deaths: the three simulations die once, then the first two resubmitted die again,
    # and the third runs (which is third depends on the order the deaths are seen).
    lost = calibrate("hmm", "exact", 1, executor=FlakyExecutor(5), **options)
    assert len(lost.simulations) == 1 and set(lost.failures) == {0, 1, 2} - set(lost.simulations)
    assert all("worker lost on 2 attempt(s)" in message for message in lost.failures.values())
    # A real process pool, whose worker really exits, twice.
    crashed = calibrate("hmm", _Crashes(), 1, target="latent", num_simulations=1, num_datapoints=10,
                        scheduler="processes", max_workers=1)
    assert crashed.simulations == () and "worker lost on 2 attempt(s)" in crashed.failures[0]


def test_each_simulation_depends_on_its_index_alone():
    """Simulation i is seeded by (seed, i) alone: a subset of simulations reproduces the
    full run's ranks."""
    full = calibrate("hmm", "exact", 1, target="latent", num_simulations=6, num_datapoints=10)
    part = calibrate("hmm", "exact", 1, target="latent", num_simulations=6, num_datapoints=10,
                     simulations=range(3, 6))
    assert part.simulations == (3, 4, 5)
    for name, values in part.ranks.items():
        assert np.array_equal(values, full.ranks[name][3:])


def test_the_method_never_replays_the_numbers_that_drew_the_truth(monkeypatch):
    """Simulation, method and ranking run on independent streams: were the method seeded as
    the simulation is, a method drawing from the prior as ``prior_simulation`` does would
    copy the truth into its first draw."""
    import inference_comparisons.calibration.run as calibration_run
    from inference_comparisons.estimators.state import prepare_cell

    model, seen = zoo.get_model("state_space"), []

    def spy(method, problem, budget, seed):
        seen.append(seed)
        return run_on_target(method, problem, budget, seed)

    monkeypatch.setattr(calibration_run, "run_on_target", spy)
    calibrate(model, "exact", 1, target="latent", num_simulations=3, num_datapoints=10, scheduler="inprocess")
    seeds = [calibration_run.simulation_seeds(0, index) for index in range(3)]
    assert seen == [s.infer for s in seeds] and all(len({s.simulate, s.infer, s.rank}) == 3 for s in seeds)

    def first_prior_draw(seed):
        prepare_cell(seed)  # as the runner seeds a method
        return {site: prior.sample() for site, prior in model.priors().items()}

    for s in seeds:
        truth = model.prior_simulation(10, s.simulate).true_params
        assert all(torch.equal(first_prior_draw(s.simulate)[site], truth[site]) for site in truth)  # the trap
        assert not any(torch.equal(first_prior_draw(s.infer)[site], truth[site]) for site in truth)


# --- the command, the store and resuming -----------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
#: 16 simulations of a few tenths of a second each on one worker: time to kill the run midway.
SLOW_CALIBRATION = ("calibrate", "--models", "state_space", "--targets", "latent", "--methods", "svi",
                    "--budget", "svi=300", "--simulations", "16", "--num-datapoints", "15", "--workers", "1")


def _rows(directory: Path) -> pd.DataFrame:
    try:
        with sqlite3.connect(directory / "results.sqlite") as connection:
            return pd.read_sql_query("SELECT cell_id, simulation, status, ranks FROM sbc_ranks", connection)
    except (pd.errors.DatabaseError, sqlite3.OperationalError):
        return pd.DataFrame(columns=["cell_id", "simulation", "status", "ranks"])


def test_calibration_survives_sigkill_and_resumes_without_loss_or_duplicates(tmp_path):
    # The driver's temporary files under tmp_path: one killed with SIGKILL cannot remove them.
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TMPDIR": str(tmp_path / "tmp")}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "inference_comparisons", *SLOW_CALIBRATION, "--out", str(out)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None and len(_rows(out)) < 5:
            time.sleep(0.2)
        assert process.poll() is None and len(_rows(out)) >= 5, "the run ended before the test acted"
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its pool worker at once
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = _rows(out)
    assert 5 <= len(before) < 16
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"{16 - len(before)} of {16 - len(before)} simulations run (0 failed), {len(before)} already stored" \
        in finished.stdout
    after = _rows(out)
    assert sorted(after["simulation"]) == list(range(16)) and after["cell_id"].is_unique
    assert (after["status"] == "ok").all()
    # What was stored before the kill is kept as it was, and a simulation is the same run anywhere.
    kept = after.set_index("cell_id").loc[before["cell_id"], "ranks"]
    assert list(kept) == list(before["ranks"])
    again = calibrate("state_space", "svi", 300, target="latent", num_simulations=16, num_datapoints=15,
                      simulations=range(2), scheduler="inprocess")
    stored = after.set_index("simulation").loc[[0, 1], "ranks"].map(json.loads)
    for name, values in again.ranks.items():
        assert [row[name] for row in stored] == values.tolist()


class Shifted(Exact):
    """The exact posterior moved up by half its sd: a biased method, built for this test only."""

    name = "shifted"

    def run(self, target, budget, seed):
        result = super().run(target, budget, seed)
        draws = {site: value + 0.5 * value.std(0) for site, value in result.draws.items()}
        return dataclasses.replace(result, kind=ResultKind.INDEPENDENT, draws=draws)


def test_report_says_in_words_which_methods_are_miscalibrated_and_how(tmp_path):
    for method in (Exact(), Overconfident(), Shifted()):
        calibrate("state_space", method, 1, target="latent", num_simulations=100, num_datapoints=10, out=tmp_path,
                  scheduler="inprocess")
    assert report_from_store(tmp_path) is None  # a store of calibration ranks only
    report = (tmp_path / "report.md").read_text()
    assert "## Calibration" in report
    assert "**overconfident** on state_space/latent at 1 (overconfident: ∪-shaped ranks" in report
    assert "**shifted** on state_space/latent at 1 (biased: the truth sits below the posterior" in report
    assert "**exact**" not in report.split("Miscalibrated:")[1]
    table = pd.read_csv(tmp_path / "calibration.csv").set_index("method")
    assert table.loc["exact", "p_value"] >= 0.01 and table.loc["exact", "simulations"] == 100
    assert len(list((tmp_path / "plots").glob("calibration_state_space_latent_*.png"))) == 3


def test_calibration_runs_on_a_dask_cluster_with_the_same_ranks():
    """The sweep's executors run calibration too: a Dask LocalCluster gives the ranks an
    in-process run gives (each simulation seeded by its index alone)."""
    options = dict(target="latent", num_simulations=4, num_datapoints=10)
    here = calibrate("gmm", "exact", 1, scheduler="inprocess", **options)
    there = calibrate("gmm", "exact", 1, scheduler="local", max_workers=1, **options)
    assert there.simulations == here.simulations == (0, 1, 2, 3)
    for name, values in here.ranks.items():
        assert np.array_equal(there.ranks[name], values)
