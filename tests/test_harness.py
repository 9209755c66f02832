"""The harness's public API and command line: bad input, statuses, the written table."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import zoo
from inference_comparisons import NotApplicable, compare, run_inference
from inference_comparisons.schema import COLUMNS


@pytest.fixture
def gmm_data():
    return zoo.get_model("gmm").simulate(num_datapoints=30, seed=0).data


@pytest.mark.parametrize("budget", [0, -5, 1.5, True])
def test_impossible_budgets_are_refused(gmm_data, budget):
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        run_inference(zoo.get_model("gmm"), gmm_data, "svi", budget=budget)


def test_unknown_method_lists_the_registry(gmm_data):
    with pytest.raises(ValueError, match="unknown method 'vi'; available: exact, svi"):
        run_inference(zoo.get_model("gmm"), gmm_data, "vi", budget=10)


def test_hmc_on_discrete_only_target_says_why(gmm_data):
    with pytest.raises(NotApplicable, match="discrete"):
        run_inference(zoo.get_model("gmm"), gmm_data, "nuts", budget=10, target="latent")


def test_compare_writes_rows_with_statuses(tmp_path):
    table = compare(models=["gmm"], methods=["exact", "nuts", "is_prior"], targets=["latent"],
                    seeds=[0, 1], budgets="quick", out=tmp_path)
    assert list(table.columns) == list(COLUMNS)
    exact = table[table.method == "exact"]
    assert (exact.status == "ok").all() and (exact.log_evidence_error == 0).all()
    assert (table[table.method == "nuts"].status == "not_applicable").all()
    assert set(table[table.method == "is_prior"].budget) == {1000, 10000}
    written = pd.read_csv(tmp_path / "results.csv")
    assert len(written) == len(table) and (tmp_path / "report.md").read_text().startswith("# Exactness")


def test_failed_cell_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from inference_comparisons.methods import get_method

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(get_method("is_prior"), "run", explode)
    # In this process: the monkeypatched method does not exist in a process pool's workers.
    table = compare(models=["gmm"], methods=["is_prior", "exact"], targets=["latent"], budgets="quick",
                    scheduler="inprocess")
    failed = table[table.method == "is_prior"]
    assert (failed.status == "failed").all() and failed.message.str.contains("RuntimeError: boom").all()
    assert (table[table.method == "exact"].status == "ok").all()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "inference_comparisons", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args,match", [
    (["run", "--models", "nope"], "unknown model"),
    (["run", "--methods", "metropolis"], "unknown method"),
    (["run", "--budgets", "huge"], "unknown budget profile"),
    (["run", "--seeds", "0"], "--seeds must be at least 1"),
    (["report", "/nonexistent"], "no results"),
    (["reference", "nope"], "unknown model"),
    (["calibrate", "--models", "hmm", "--methods", "exact", "--simulations", "0"],
     "num_simulations must be an integer of at least 1"),
    (["calibrate", "--models", "hmm", "--methods", "exact", "--num-draws", "1"],
     "num_draws must be an integer of at least 2"),
    (["calibrate", "--models", "hmm", "--methods", "exact", "--budget", "svi=10"],
     "--budget names methods not in --methods: ['svi']"),
    (["calibrate", "--models", "hmm", "--methods", "exact", "--max-budget", "exact"],
     "--max-budget expects METHOD=B1,B2,..., got 'exact'"),
    (["calibrate", "--models", "hmm", "--targets", "latent", "--methods", "exact", "--budget", "exact=10",
      "--max-budget", "exact=5"], "max_budget 5 is below the budget 10"),
    (["calibrate", "--models", "hmm", "--methods", "metropolis"], "unknown method"),
    (["reference", "ppca", "--jobs", "0"], "jobs must be an integer in 1..256, got 0"),
    (["reference", "ppca", "--draws-per-chain", "0"], "draws_per_chain must be an integer in 1..10000000, got 0"),
    (["reference", "ppca", "--seed", "-1"], "seed must be an integer in 0..4294967295, got -1"),
    (["run", "--models", ""], "--models was given no names"),
    (["run", "--methods", ",", "--out", "x"], "--methods was given no names"),
    (["run", "--out", ""], "the output directory must be named"),
    (["run", "--methods", "exact", "--budget", "nuts=100"], "budget ladders given for ['nuts'], which this sweep "
                                                            "does not run (methods: exact)"),
    (["run", "--methods", "nuts", "--budget", "nuts=1000000000"], "budget 1000000000 is beyond the maximum of "
                                                                   "1,000,000 draws"),
])
def test_cli_bad_input_exits_non_zero_with_a_message(args, match):
    completed = _cli(*args)
    assert completed.returncode != 0
    assert match in completed.stdout + completed.stderr


@pytest.mark.parametrize("command,default", [("run", "[default: one per core]"), ("run", "[default: 1]"),
                                             ("calibrate", "[default: never again]")])
def test_cli_help_shows_the_defaults_it_names(command, default):
    """Rich reads an unescaped "[default: ...]" in a help text as a markup tag and drops it."""
    completed = subprocess.run([sys.executable, "-m", "inference_comparisons", command, "--help"],
                               capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    assert default in completed.stdout


#: The installed console script, next to the interpreter running the tests.
CONSOLE_SCRIPT = Path(sys.executable).with_name("inference-comparisons")


@pytest.mark.parametrize("args,match", [
    (["run", "--seeds", "abc"], "Invalid value for '--seeds'"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["run", "--out"], "Option '--out' requires an argument"),
    (["report"], "Missing argument 'directory'"),
    (["run", "--models", "[red]x"], "unknown model(s) ['[red]x']"),  # user text is not rich markup
])
def test_usage_errors_through_the_console_script_are_one_line_and_exit_2(args, match):
    completed = subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True)
    output = (completed.stdout + completed.stderr).strip()
    assert completed.returncode == 2, output
    assert len(output.splitlines()) == 1 and match in output and "Traceback" not in output


def test_cli_reference_refused_by_a_gate_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """A refusal is not bad input (exit 2) nor a crash (a traceback): its message is the output."""
    from inference_comparisons import cli, references

    def refuse(*args, **kwargs):
        raise references.GoldStandardError("gmm/posterior: reference failed gates: ess_min=12")

    monkeypatch.setattr(references, "build_reference", refuse)
    monkeypatch.setattr(sys, "argv", ["inference_comparisons", "reference", "gmm", "--build-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "refused: gmm/posterior: reference failed gates: ess_min=12" in out and "Traceback" not in out


def test_cli_list_and_run(tmp_path):
    listed = _cli("list")
    assert listed.returncode == 0 and "gmm" in listed.stdout and "is_prior" in listed.stdout
    ran = _cli("run", "--models", "gmm", "--targets", "latent", "--methods", "exact,is_prior",
               "--budgets", "quick", "--out", str(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (tmp_path / "results.csv").exists() and "is_prior" in ran.stdout
    rebuilt = _cli("report", str(tmp_path))
    assert rebuilt.returncode == 0 and "exact" in rebuilt.stdout


def test_run_inference_accepts_numpy(gmm_data):
    result = run_inference(zoo.get_model("gmm"), gmm_data.numpy(), "exact", budget=1, target="latent")
    assert torch.isfinite(torch.tensor(result.log_evidence))


def test_the_python_api_takes_what_the_command_line_takes():
    """A count of seeds, one model named by a string, and NumPy integers, as the CLI and a
    sweep file take them; an empty selection is refused, not read as 'all'."""
    import numpy as np

    from inference_comparisons.sweep import plan

    assert {c.seed for c in plan(models="gmm", methods=["exact"], seeds=3)} == {0, 1, 2}
    assert {c.model for c in plan(models="gmm", methods=["exact"], seeds=np.int64(1))} == {"gmm"}
    with pytest.raises(ValueError, match="an empty selection of model"):
        plan(models=[], methods=["exact"])
    with pytest.raises(ValueError, match="an empty selection of method"):
        plan(models="gmm", methods=())
    with pytest.raises(ValueError, match="seeds must be a count of at least 1"):
        plan(models="gmm", methods=["exact"], seeds=0)
    with pytest.raises(ValueError, match="max_workers must be a positive integer, got 0"):
        compare(models=["gmm"], methods=["exact"], targets=["latent"], max_workers=0)
    for timeout in (0, -1.0, float("inf"), "60"):
        with pytest.raises(ValueError, match="the worker timeout must be a positive number of seconds"):
            compare(models=["gmm"], methods=["exact"], targets=["latent"], worker_timeout_s=timeout)
    # The command line leaves the default to the sweep, and its help states the same number.
    from inference_comparisons import cli
    from inference_comparisons.sweep.executors import NO_WORKERS_TIMEOUT_S
    assert f"[default: {NO_WORKERS_TIMEOUT_S:g}]" in inspect.signature(cli.run).parameters["worker_timeout"].default.help
    model = zoo.get_model("gmm", num_components=np.int64(2))
    data = model.simulate(num_datapoints=np.int64(20), seed=0).data
    assert model.config()["num_components"] == 2 and type(model.config()["num_components"]) is int
    result = run_inference(model, data, "is_prior", budget=np.int64(50), seed=np.int64(1), target="latent")
    assert result.budget == 50 and result.seed == 1


@pytest.mark.parametrize("seed", [-1, 1.5, 2**32, True])
def test_a_bad_seed_gets_the_projects_error(gmm_data, seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in 0\.\.4294967295"):
        run_inference(zoo.get_model("gmm"), gmm_data, "exact", budget=1, seed=seed, target="latent")


def test_data_of_the_wrong_kind_is_named_with_what_to_do(gmm_data):
    import numpy as np

    frame = pd.DataFrame({"x": gmm_data[:, 0].numpy()})
    with pytest.raises(ValueError, match=r"got a DataFrame; pass data.to_numpy\(dtype=float\)"):
        run_inference(zoo.get_model("gmm"), frame, "exact", budget=1, target="latent")
    with pytest.raises(ValueError, match="must be a tensor or array of numbers, got ndarray of dtype <U1"):
        run_inference(zoo.get_model("gmm"), np.array(["a", "b"]), "exact", budget=1, target="latent")


def test_compare_refuses_to_run_inside_a_worker_importing_an_unguarded_script(monkeypatch):
    """With the spawn start method each pool worker imports the user's script as
    ``__mp_main__``; an unguarded compare() there would start a sweep per worker."""
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__mp_main__"))
    with pytest.raises(RuntimeError, match='if __name__ == "__main__":'):
        compare(models=["gmm"], methods=["exact"], targets=["latent"])

