"""Sweeps: the resumable store (SIGKILL mid-sweep), Dask, failures as data, errors before
work, and the report rebuilt from the store alone. Cells are tiny: the GMM's latent target
with the exact answer and prior importance sampling at a few hundred particles."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
import torch

from inference_comparisons import Cost, Diagnostics, InferenceResult, ResultKind, compare
from inference_comparisons.diagnostics import load_inference_data
from inference_comparisons.methods import get_method
from inference_comparisons.report import report_from_store
from inference_comparisons.schema import COLUMNS, Cell
from inference_comparisons.store import STORE_NAME
from inference_comparisons.sweep import SweepConfig, parse_ladders, plan, run_sweep
from inference_comparisons.sweep.cell import _divergence_storm
from inference_comparisons.sweep.driver import MAX_ATTEMPTS, claimed, drive
from inference_comparisons.sweep.executors import Workers
from inference_comparisons.sweep.progress import Progress

from flaky_executor import FlakyExecutor

TINY = dict(models=["gmm"], targets=["latent"], methods=["exact", "is_prior"], budgets="quick",
            ladders={"is_prior": (200,)})
ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    """This process's environment, with the project importable (and ``extra``)."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inference_comparisons", *args], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, **kwargs)


@contextmanager
def _started(*args: str, module: str = "inference_comparisons", env: dict[str, str] | None = None,
             output: bool = True) -> Iterator[subprocess.Popen]:
    """``python -m module args`` in a session of its own (so that killing its process group
    reaches what it started and nothing else), killed with that group on the way out.
    ``output``: its stdout and stderr, merged, for ``communicate``; else discarded.

    It starts with SIGINT at its default, as from a terminal: a test run started in the
    background by a shell without job control (``nohup make test &``) ignores SIGINT, every
    child inherits that, and Python then never raises KeyboardInterrupt (the driver under a
    SIGINT test ran to completion)."""
    pipe = subprocess.PIPE if output else subprocess.DEVNULL
    # Its temporary files (the driver's claims directory) in a directory removed here: a
    # driver killed with SIGKILL cannot remove its own, and they would pile up in /tmp.
    with tempfile.TemporaryDirectory(prefix="driver-") as scratch:
        # exec keeps an ignored signal ignored: the child inherits SIGINT at its default from a
        # moment of it here (not from a preexec_fn, which is unsafe in a process with threads).
        previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                                       env=env or _env(TMPDIR=scratch), stdout=pipe,
                                       stderr=subprocess.STDOUT if output else subprocess.DEVNULL, text=True,
                                       start_new_session=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            yield process
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_stored(directory: Path, count: int, process: subprocess.Popen, timeout_s: float = 300) -> None:
    """Wait until the store under ``directory`` holds ``count`` rows and ``process`` still runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None and _num_stored(directory) < count:
        time.sleep(0.2)
    assert process.poll() is None and _num_stored(directory) >= count, "the sweep ended before the test acted"


#: Six GMM cells of a few seconds each: time for a test to act while they run.
SLOW_SWEEP = ("run", "--models", "gmm", "--targets", "latent", "--methods", "is_prior", "--budget",
              "is_prior=40000,40001,40002,40003,40004,40005")


def _cli_without_torch(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a process where importing torch fails: what it does before its seconds
    of imports."""
    code = ("import sys; sys.modules['torch'] = None; from inference_comparisons.cli import main; "
            f"sys.argv = ['inference_comparisons', *{list(args)!r}]; main()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT)


def _stored(directory: Path) -> pd.DataFrame:
    with sqlite3.connect(directory / STORE_NAME) as connection:
        return pd.read_sql_query("SELECT cell_id, version, status, finished_at FROM cells", connection)


def _num_stored(directory: Path) -> int:
    """Rows stored so far; 0 while the driver has not yet created the store or its table."""
    try:
        return len(_stored(directory)) if (directory / STORE_NAME).exists() else 0
    except pd.errors.DatabaseError:
        return 0


def test_plan_applies_ladder_overrides_and_validates_them():
    cells = plan(["gmm"], ["exact", "is_prior"], ["latent"], [0, 1], "quick", ladders={"is_prior": [200, 400]})
    assert sorted({c.budget for c in cells if c.method == "is_prior"}) == [200, 400] and len(cells) == 6
    assert parse_ladders(["nuts=100,300", "svi=5"]) == {"nuts": (100, 300), "svi": (5,)}
    for bad, match in [(["nuts"], "METHOD=B1"), (["nuts=1.5"], "positive integers"), (["nuts=0"], "positive"),
                       (["metropolis=10"], None)]:
        with pytest.raises(ValueError, match=match):
            plan(["gmm"], ladders=parse_ladders(bad))


@pytest.mark.parametrize("text,match", [
    ("models = ['gmm'\n", "not valid TOML"),
    ("modles = ['gmm']\n", "unknown key"),
    ("models = ['nope']\n", "unknown model"),
    ("seeds = 0\n", "seeds must be at least 1"),
    ("profile = 'huge'\n", "unknown budget profile"),
    ("[ladders]\nnuts = [0]\n", "positive integer"),
    ("methods = []\n", "an empty selection of method"),
    ("models = []\n", "an empty selection of model"),
    ("methods = ['exact']\n[ladders]\nnuts = [100]\n", "which this sweep does not run"),
])
def test_bad_sweep_file_is_refused_with_its_name(tmp_path, text, match):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as caught:
        SweepConfig.from_toml(path)
    assert str(path) in str(caught.value)


def test_sweep_file_plans_the_grid(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text("models = ['gmm']\ntargets = ['latent']\nmethods = ['is_prior']\nseeds = [3, 4]\n"
                    "profile = 'quick'\n[ladders]\nis_prior = [200, 300]\n")
    cells = SweepConfig.from_toml(path).plan()
    assert {(c.budget, c.seed) for c in cells} == {(200, 3), (200, 4), (300, 3), (300, 4)}


def _mcmc_result(divergences: float) -> InferenceResult:
    return InferenceResult(method="nuts", target="posterior", budget=10, budget_unit="draws", seed=0,
                           kind=ResultKind.MCMC, draws={"loc": torch.zeros(10, 2)}, num_chains=2,
                           log_evidence=float("nan"), log_evidence_se=float("nan"), moments={}, local_marginals={},
                           cost=Cost(0.0, 0, 0), diagnostics=Diagnostics(divergences=divergences))


def test_divergence_storm_fails_a_cell():
    assert "divergence storm: 6 of 10" in _divergence_storm(_mcmc_result(6.0))
    assert _divergence_storm(_mcmc_result(5.0)) is None


def test_failed_cells_are_stored_and_retried_on_request(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(get_method("is_prior"), "run", explode)
    table = compare(**TINY, seeds=[0, 1], out=tmp_path, scheduler="inprocess")
    assert list(table.columns) == list(COLUMNS)
    failed = table[table.method == "is_prior"]
    assert (failed.status == "failed").all() and failed.message.str.contains("RuntimeError: boom").all()
    assert (table[table.method == "exact"].status == "ok").all()
    before = _stored(tmp_path)
    monkeypatch.undo()
    retried = compare(**TINY, seeds=[0, 1], out=tmp_path, scheduler="inprocess", retry_failed=True)
    assert (retried.status == "ok").all()
    after = _stored(tmp_path)
    assert len(after) == len(before) == 4 and after.cell_id.is_unique
    exact = lambda frame: frame[frame.cell_id.str.contains("exact")].set_index("cell_id").finished_at  # noqa: E731
    assert exact(after).equals(exact(before))  # ok cells were not rerun


def test_a_dead_worker_is_retried_then_marked_failed():
    cells = [Cell("gmm", "latent", "exact", 1, 0)]
    assert run_sweep(cells, None, executor=FlakyExecutor(1)).status.tolist() == ["ok"]
    lost = run_sweep(cells, None, executor=FlakyExecutor(5))
    assert lost.status.tolist() == ["failed"] and "worker lost on 2 attempt(s)" in lost.message[0]


@dataclass(frozen=True)
class _Task:
    key: str


def _fail_before_claiming(task: _Task, claims: str | None = None) -> dict:
    raise OSError(f"{task.key}: failed in the worker")


def _claim_and_return(task: _Task, claims: str | None = None) -> dict:
    with claimed(claims, task.key):
        return {"key": task.key, "claims": claims}


def test_an_error_inside_a_pool_task_is_charged_and_a_vanished_claims_directory_is_made_again(tmp_path):
    """An error a task raises (not a dead worker) counts as an attempt: resubmitted as "not
    started", it would loop for ever. A claims directory removed under a running sweep (a
    /tmp cleaner) is made again by the next task."""
    rows: list[dict] = []
    lost = lambda task, error, attempts: {"key": task.key, "message": str(error), "attempts": attempts}  # noqa: E731
    progress = Progress(total=1, skipped=0, console=None, enabled=False)
    with ProcessPoolExecutor(1) as pool:
        drive(Workers(pool, lambda: pool), [_Task("a")], _fail_before_claiming, lost, rows.append, progress)
    assert rows == [{"key": "a", "message": "a: failed in the worker", "attempts": MAX_ATTEMPTS}]
    gone = tmp_path / "claims-gone"
    assert _claim_and_return(_Task("b"), str(gone)) == {"key": "b", "claims": str(gone)}
    assert gone.is_dir() and not (gone / "b").exists()


def test_dask_local_cluster_sweep(tmp_path):
    distributed = pytest.importorskip("distributed")
    # One in-process worker with one thread: cells set Pyro's global seed and param store.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        table = compare(**TINY, seeds=[0], out=tmp_path, scheduler=cluster.scheduler_address)
    assert len(table) == 2 and (table.status == "ok").all()
    for path in table.idata_path:
        assert "observed_data" in load_inference_data(tmp_path / path).groups()
    assert len(_stored(tmp_path)) == 2


def test_report_is_rebuilt_from_the_store_alone(tmp_path):
    compare(**TINY, seeds=[0, 1], out=tmp_path, scheduler="inprocess")
    for written in ("results.csv", "report.md"):
        (tmp_path / written).unlink()
    for png in (tmp_path / "plots").glob("*.png"):
        png.unlink()
    completed = _cli("report", str(tmp_path))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = (tmp_path / "report.md").read_text()
    assert "## gmm / latent" in report and "Cost to reach ε" in report and "| method | exactness | cost |" in report
    assert len(pd.read_csv(tmp_path / "results.csv")) == 4
    png = tmp_path / "plots" / "gmm_latent.png"
    assert png.stat().st_size > 10_000
    rows = report_from_store(tmp_path)
    assert {"elpd_loo", "num_khat_above_0_7", "bfmi_min", "idata_path"} <= set(rows.columns)
    ok = rows[rows.method == "is_prior"]
    assert ok.elpd_loo.notna().all() and all((tmp_path / p).is_file() for p in ok.idata_path)


def test_diagnose_lists_cells_and_refuses_a_missing_or_corrupt_one(tmp_path):
    compare(**TINY, seeds=[0], out=tmp_path, scheduler="inprocess")
    listed = _cli("diagnose", str(tmp_path))
    assert listed.returncode == 0 and "gmm.simulated.latent.is_prior.200.seed0" in listed.stdout
    missing = _cli("diagnose", str(tmp_path), "--cell", "nope")
    assert missing.returncode == 2 and "no cell 'nope'" in missing.stdout
    (tmp_path / "idata" / "gmm.simulated.latent.is_prior.200.seed0.nc").write_bytes(b"not netCDF")
    corrupt = _cli("diagnose", str(tmp_path), "--cell", "gmm.simulated.latent.is_prior.200.seed0")
    assert corrupt.returncode == 2 and "cannot read InferenceData" in corrupt.stdout


def test_errors_come_before_any_work(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("models = 'gmm'\nprofile = 'huge'\n")
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    cases = [
        (["--config", str(bad), "--out", str(tmp_path / "a")], "unknown budget profile", tmp_path / "a"),
        (["--out", str(not_a_directory / "out")], "not writable", not_a_directory / "out"),
        (["--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path / "c")], "cannot reach a Dask scheduler",
         tmp_path / "c"),
    ]
    for args, match, out in cases:
        completed = _cli("run", "--models", "gmm", "--targets", "latent", "--methods", "exact", *args)
        assert completed.returncode == 2 and match in completed.stdout, completed.stdout + completed.stderr
        assert not list(out.glob("idata/*.nc"))
        if (out / STORE_NAME).exists():
            assert _stored(out).empty


def test_resume_after_sigkill_keeps_finished_cells_without_duplicates(tmp_path):
    args = ["run", "--models", "gmm", "--targets", "latent", "--methods", "is_prior", "--budget",
            "is_prior=200,300,400,500,600,700", "--workers", "1", "--out", str(tmp_path)]
    with _started(*args, output=False) as process:
        _wait_until_stored(tmp_path, 1, process)
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its pool worker at once
    survived = _stored(tmp_path)
    assert 1 <= len(survived) < 6 and survived.cell_id.is_unique and (survived.status == "ok").all()
    for path in survived.cell_id:
        assert load_inference_data(tmp_path / "idata" / f"{path}.nc").groups()
    completed = _cli(*args)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"{6 - len(survived)} of {6 - len(survived)} cells run" in completed.stdout
    final = _stored(tmp_path)
    assert len(final) == 6 and final.cell_id.is_unique and (final.status == "ok").all()
    kept = final.set_index("cell_id").loc[survived.cell_id, "finished_at"]
    assert kept.tolist() == survived.finished_at.tolist()  # not recomputed
    assert not list((tmp_path / "idata").glob(".*.tmp"))


def test_a_sweep_written_to_a_log_reports_progress_as_it_goes(monkeypatch):
    """Not on a terminal (``make run > log``) a plain line reports progress at a steady
    pace, also while a long cell runs, not only one line at the end."""
    import io

    from rich.console import Console

    from inference_comparisons.sweep import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    log = io.StringIO()
    cells = plan(**{**TINY, "seeds": [0, 1]})
    run_sweep(cells, None, scheduler="inprocess", progress=True, console=Console(file=log, width=200))
    lines = log.getvalue().splitlines()
    assert lines[-1].startswith(f"sweep: {len(cells)} of {len(cells)} cells run (0 failed)")
    assert [line for line in lines if line.startswith("sweep: 1 of 4 cells done (0 failed)")]
    assert all(" cells done (" in line for line in lines[:-1]) and len(lines) >= len(cells)
    waiting = progress.Progress(3, 0, Console(file=log, width=200), enabled=True, log_interval_s=0.0)
    waiting.tick()  # no cell finished yet: elapsed time, no estimate
    assert log.getvalue().splitlines()[-1].startswith("sweep: 0 of 3 cells done (0 failed), 0 s elapsed")


def test_a_second_run_on_a_busy_directory_is_refused_before_any_work(tmp_path):
    """Two runs on one directory both computed every cell and the second deleted the first's
    half-written InferenceData at start-up; now the second is refused, exit 2, naming the
    first, before it imports torch (within a second: the imports take seconds), and the
    first finishes every cell with readable files."""
    args = ["run", "--models", "gmm", "--targets", "latent", "--methods", "is_prior", "--budget",
            "is_prior=200,300,400,500", "--workers", "1", "--out", str(tmp_path)]
    with _started(*args) as first:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / STORE_NAME).exists():
            time.sleep(0.1)
        second = _cli_without_torch(*args)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "is in use by another run (pid" in second.stdout and len(second.stdout.strip().splitlines()) == 1
        output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    stored = _stored(tmp_path)
    assert len(stored) == 4 and stored.cell_id.is_unique and (stored.status == "ok").all()
    for cell in stored.cell_id:
        assert "posterior" in load_inference_data(tmp_path / "idata" / f"{cell}.nc").groups()


def test_a_run_removes_only_temporary_files_no_live_process_is_writing(tmp_path):
    idata = tmp_path / "idata"
    idata.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphaned = idata / f".gmm.simulated.latent.exact.1.seed0.nc.{int(dead.stdout)}.tmp"
    in_progress = idata / f".gmm.simulated.latent.exact.1.seed1.nc.{os.getpid()}.tmp"
    orphaned.write_text("half a file")
    in_progress.write_text("being written")
    compare(models=["gmm"], targets=["latent"], methods=["exact"], seeds=[0], out=tmp_path, scheduler="inprocess")
    assert not orphaned.exists() and in_progress.exists()


def _pool_workers(driver: int) -> list[int]:
    """The process-pool or Dask workers a driver spawned (its children but the resource
    tracker)."""
    return [pid for pid in _children(driver) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _claimed_cell(claims_root: Path, worker: int, other_than: list[str], timeout_s: float = 300) -> str:
    """The cell a pool worker runs now: the claim it wrote (its pid, in the driver's claims
    directory under ``claims_root``), waiting for one that is not in ``other_than``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for claim in claims_root.glob("claims-*/*"):
            try:
                if claim.read_text() == str(worker) and claim.name not in other_than:
                    return claim.name
            except FileNotFoundError:  # the cell finished as we looked
                continue
        time.sleep(0.05)
    raise AssertionError(f"worker {worker} claimed no new cell in {timeout_s} s")


@pytest.mark.parametrize("scheduler", ["processes", "local"], ids=["process-pool", "dask-local-cluster"])
def test_killed_workers_charge_only_the_cells_they_were_running(tmp_path, scheduler):
    """Each pool breakage used to charge an attempt to every pending cell, so two worker
    deaths far apart (two out-of-memory kills, say) failed cells that never started. Kill
    the pool's worker twice, each time while it runs a different cell (read from its claim):
    every cell ends ok, no process of the run outlives it, and nothing leaks (the
    multiprocessing resource tracker would warn at exit). On Dask, kill it once: the nanny
    restarts the worker and the scheduler reruns its cell."""
    out, claims_root = tmp_path / "out", tmp_path / "tmp"
    claims_root.mkdir()
    # The driver's claims directory, under TMPDIR, where the test can find it.
    env = _env(TMPDIR=str(claims_root)) if scheduler == "processes" else None
    seen: set[int] = set()
    killed: list[str] = []
    with _started(*SLOW_SWEEP, "--workers", "1", "--scheduler", scheduler, "--out", str(out), env=env) as driver:
        # Dask: one kill. A second one soon after sometimes leaves the nanny killing the worker
        # it had just restarted and starting none (Dask's race, seen 2 times in ~10 runs): the
        # sweep then stops after --worker-timeout, as the test below checks, instead of ending.
        for stored in (1, 2) if scheduler == "processes" else (1,):
            _wait_until_stored(out, stored, driver)
            assert _num_stored(out) < 6, "the sweep ran ahead of the test"
            seen.update(_children(driver.pid))
            workers = _pool_workers(driver.pid)
            assert len(workers) == 1
            if scheduler == "processes":
                killed.append(_claimed_cell(claims_root, workers[0], killed))
            os.kill(workers[0], signal.SIGKILL)
            time.sleep(1.0)
        seen.update(_children(driver.pid))
        output, _ = driver.communicate(timeout=600)
        # Checked before leaving the block, whose exit kills what is left of the run.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(pid) for pid in seen):
            time.sleep(0.1)
        assert not [pid for pid in seen if _running(pid)], "a process of the run outlived it"
    assert driver.returncode == 0, output
    assert "leaked" not in output, output
    final = _stored(out)
    assert len(final) == 6 and (final.status == "ok").all(), final


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_dask_cluster_left_without_workers_stops_the_sweep_and_keeps_its_cells(tmp_path):
    """A Dask worker killed for good (no nanny to restart it) left the driver waiting for
    minutes on cells no worker would ever run. With a short ``--worker-timeout`` the sweep
    stops: exit 1, one line saying how many cells are stored and how to resume, every stored
    cell intact; and a rerun with a worker completes it."""
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{_free_port()}"
    args = [*SLOW_SWEEP, "--scheduler", address, "--worker-timeout", "5", "--out", str(tmp_path)]
    worker = ("distributed.cli.dask_worker", address, "--no-nanny", "--nthreads", "1", "--no-dashboard")
    with ExitStack() as started:
        started.enter_context(_started("--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard",
                                       module="distributed.cli.dask_scheduler", output=False))
        first_worker = started.enter_context(_started(*worker[1:], module=worker[0], output=False))
        driver = started.enter_context(_started(*args))
        _wait_until_stored(tmp_path, 1, driver)
        assert _num_stored(tmp_path) < 6, "the sweep ended before the worker's kill"
        first_worker.kill()
        output, _ = driver.communicate(timeout=120)
        stored = _stored(tmp_path)
        assert driver.returncode == 1, output
        assert (f"the Dask cluster has had no worker for 5 s: {len(stored)} of 6 cells stored; start workers"
                in " ".join(output.split())), output
        assert (stored.status == "ok").all()
        for cell in stored.cell_id:
            assert "posterior" in load_inference_data(tmp_path / "idata" / f"{cell}.nc").groups()
        started.enter_context(_started(*worker[1:], module=worker[0], output=False))
        rerun = _cli(*args, timeout=600)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        final = _stored(tmp_path)
        assert len(final) == 6 and final.cell_id.is_unique and (final.status == "ok").all()


def _children(pid: int) -> list[int]:
    """The children of every thread of process ``pid`` (a Dask nanny restarts its worker
    from its event-loop thread)."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in
            (task / "children").read_text().split()]


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("signals", [[signal.SIGKILL], [signal.SIGTERM], [signal.SIGINT],
                                     [signal.SIGINT, signal.SIGINT]], ids=["kill-9", "term", "int", "int-int"])
def test_a_signalled_driver_takes_its_workers_with_it_and_keeps_every_finished_cell(tmp_path, signals):
    """A signal to the driver alone (not its process group) used to orphan the pool worker
    and the resource tracker, hang on two SIGINTs, or drop rows its worker had finished.
    Within seconds no process of the run is left, every stored cell has its InferenceData,
    SIGTERM and SIGINT say what was kept, and a rerun completes the sweep."""
    args = [*SLOW_SWEEP, "--workers", "1", "--out", str(tmp_path)]
    with _started(*args) as driver:
        _wait_until_stored(tmp_path, 1, driver)
        children = _children(driver.pid)
        for number in signals:
            os.kill(driver.pid, number)
            time.sleep(0.2)
        output, _ = driver.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(child) for child in children):
            time.sleep(0.1)
        assert not [child for child in children if _running(child)], "a process of the run outlived its driver"
    stored = _stored(tmp_path)
    assert stored.cell_id.is_unique and (stored.status == "ok").all()
    for cell in stored.cell_id:
        assert "posterior" in load_inference_data(tmp_path / "idata" / f"{cell}.nc").groups()
    if signals[0] != signal.SIGKILL:
        # 130, or killed by a second SIGINT while it was already exiting (as a shell reports
        # it: 128 + 2 either way).
        assert driver.returncode in (130, -signal.SIGINT), output
        assert f"interrupted: {len(stored)} of 6 cells stored; rerun the same command to resume" in output
    rerun = _cli(*args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    final = _stored(tmp_path)
    assert len(final) == 6 and final.cell_id.is_unique and (final.status == "ok").all()


def test_a_cell_without_a_readable_inference_data_runs_again(tmp_path, monkeypatch):
    """A row stored ok without its InferenceData (a failed write, a file deleted or damaged
    since) was never written again; a resume or a retry now recomputes exactly those."""
    import inference_comparisons.diagnostics as diagnostics

    original = diagnostics.save_inference_data
    calls = []

    def refuse_once(idata, path):
        calls.append(path)
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied", str(path))
        return original(idata, path)

    monkeypatch.setattr(diagnostics, "save_inference_data", refuse_once)
    compare(**TINY, seeds=[0, 1], out=tmp_path, scheduler="inprocess")
    before = _stored(tmp_path).set_index("cell_id")
    unwritten = [key for key in before.index if not (tmp_path / "idata" / f"{key}.nc").exists()]
    assert len(unwritten) == 1
    written = sorted(set(before.index) - set(unwritten))
    (tmp_path / "idata" / f"{written[0]}.nc").unlink()
    damaged = tmp_path / "idata" / f"{written[1]}.nc"
    damaged.write_bytes(damaged.read_bytes()[:200])
    table = compare(**TINY, seeds=[0, 1], out=tmp_path, scheduler="inprocess")
    after = _stored(tmp_path).set_index("cell_id")
    rerun = {key for key in after.index if after.finished_at[key] != before.finished_at[key]}
    assert rerun == {unwritten[0], written[0], written[1]}
    assert (table.status == "ok").all() and (table.message == "").all()
    for key in after.index:
        assert load_inference_data(tmp_path / "idata" / f"{key}.nc").groups()


def test_a_full_disk_stops_the_sweep_with_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    import errno

    import inference_comparisons.diagnostics as diagnostics
    from inference_comparisons import cli

    def fill_the_disk(idata, path):
        path.write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(diagnostics, "save_inference_data", fill_the_disk)
    monkeypatch.setattr(sys, "argv", ["inference-comparisons", "run", "--models", "gmm", "--targets", "latent",
                                      "--methods", "exact", "--scheduler", "inprocess", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out = capsys.readouterr().out
    assert exited.value.code == 1 and "Traceback" not in out
    assert f"the disk holding {tmp_path} is full (" in out and "rerun the same command to resume" in out
    assert len(out.strip().splitlines()) <= 2  # the error, after the progress line
    assert not list((tmp_path / "idata").glob(".*"))
    assert _num_stored(tmp_path) == 0


@pytest.mark.parametrize("kind,match", [
    ("not sqlite", "is not a readable results store: file is not a database"),
    ("foreign sqlite", "is not a results store: it has no cells table"),
    ("no status column", "is not a results store: its cells table has no status"),
])
def test_report_and_diagnose_read_a_store_without_writing_and_refuse_what_is_not_one(tmp_path, kind, match):
    path = tmp_path / STORE_NAME
    if kind == "not sqlite":
        path.write_text("not a database at all")
    else:
        with sqlite3.connect(path) as connection:
            if kind == "foreign sqlite":
                connection.execute("CREATE TABLE birds (name TEXT)")
            else:
                connection.execute("CREATE TABLE cells (cell_id TEXT, version TEXT, finished_at REAL)")
    before = path.read_bytes()
    for command in ("report", "diagnose"):
        completed = _cli(command, str(tmp_path))
        assert completed.returncode == 2, completed.stdout + completed.stderr
        assert match in completed.stdout and len(completed.stdout.strip().splitlines()) == 1
    assert path.read_bytes() == before  # no table created, no column added


def test_a_report_leaves_the_store_untouched_and_replaces_its_files_whole(tmp_path, monkeypatch):
    import inference_comparisons.report.document as document

    compare(**TINY, seeds=[0], out=tmp_path, scheduler="inprocess")
    store_bytes = (tmp_path / STORE_NAME).read_bytes()
    first = {name: (tmp_path / name).read_bytes() for name in ("report.md", "results.csv")}
    report_from_store(tmp_path)
    assert (tmp_path / STORE_NAME).read_bytes() == store_bytes

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted while drawing")

    monkeypatch.setattr(document, "write_plots", fail)
    with pytest.raises(RuntimeError):
        report_from_store(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in first} == first  # not half a new report
    assert not list(tmp_path.glob(".report-*"))

