"""Running tasks on an executor when workers can die: the sweep's cells and calibration's
simulations both go through :func:`drive`.

A task is anything with a ``key`` (its identity in the store) that a picklable ``work``
function turns into a row in a worker. The driver hands each row to ``sink`` as its task
completes. A task whose worker dies (a crashed process, a lost Dask worker) is resubmitted,
:data:`MAX_ATTEMPTS` attempts in all, then given the row ``lost(task, error, attempts)``: a
failure, recorded like any other, and the other tasks go on.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from inference_comparisons.sweep.executors import NO_WORKERS_TIMEOUT_S, NoWorkers, Workers
from inference_comparisons.sweep.progress import Progress

__all__ = ["MAX_ATTEMPTS", "Task", "claimed", "drive"]

#: Attempts per task when its worker dies: the first run plus one retry; then the task is
#: recorded as failed.
MAX_ATTEMPTS = 2

#: Seconds between the driver's looks at a Dask cluster's workers while it waits for tasks.
WORKER_CHECK_S = 2.0


class Task(Protocol):
    """What the driver runs: identified by its ``key``."""

    @property
    def key(self) -> str: ...


@contextmanager
def claimed(claims: str | None, key: str) -> Iterator[None]:
    """In a worker: the task ``key`` is claimed in the directory ``claims`` (when given)
    while it runs, so that when a worker dies and breaks the whole process pool, the driver
    charges an attempt to the tasks that had started, not to those still queued."""
    claim = Path(claims) / key if claims is not None else None
    if claim is not None:
        # A long run's directory can vanish under it (a /tmp cleaner): made again, not a
        # failure of every task from then on.
        claim.parent.mkdir(parents=True, exist_ok=True)
        claim.write_text(str(os.getpid()))
    yield
    if claim is not None:
        claim.unlink(missing_ok=True)


class _Driver:
    """Submits every task and hands each row to ``sink`` as its task completes; a task whose
    worker dies is resubmitted (:data:`MAX_ATTEMPTS` in all), then given its ``lost`` row.

    A dead process breaks a whole process pool: every pending future fails, and ``renew``
    replaces the pool once per breakage. Only the tasks that had started (claimed in
    ``claims``, see :func:`claimed`) are charged an attempt; the queued ones are resubmitted
    as they were. Other executors report each lost task alone (``claims`` is None).

    Where workers can vanish for good (a Dask cluster: ``workers.count``), a cluster that has
    had no worker for ``worker_timeout_s`` stops the run with :class:`NoWorkers`: its tasks
    would otherwise wait forever."""

    def __init__(self, workers: Workers, work: Callable[..., dict[str, Any]],
                 lost: Callable[[Any, BaseException, int], dict[str, Any]], claims: Path | None,
                 sink: Callable[[dict[str, Any]], None], progress: Progress, worker_timeout_s: float) -> None:
        self.executor, self.renew, self.count_workers, self.generation = workers.executor, workers.renew, workers.count, 0
        self.work, self.lost, self.claims, self.sink, self.progress = work, lost, claims, sink, progress
        self.worker_timeout_s, self.workerless_since = worker_timeout_s, None
        self.pending: dict[Future, tuple[Task, int, int]] = {}

    def submit(self, task: Task, attempt: int) -> None:
        future = (self.executor.submit(self.work, task) if self.claims is None
                  else self.executor.submit(self.work, task, claims=str(self.claims)))
        self.pending[future] = (task, attempt, self.generation)

    def run(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self.submit(task, 1)
        try:
            while self.pending:
                done, _ = wait(list(self.pending), return_when=FIRST_COMPLETED, timeout=(
                    self.progress.log_interval_s if self.count_workers is None
                    else min(self.progress.log_interval_s, WORKER_CHECK_S)))
                self.progress.tick()
                if not done:
                    self._check_workers()
                for future in done:
                    self._completed(future)
        except KeyboardInterrupt:
            # Keep what finished: rows a worker returned that the loop had not reached yet.
            for future in self.pending:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self.sink(future.result())
            raise

    def _check_workers(self) -> None:
        if self.count_workers is None:
            return
        now = time.monotonic()
        if self.count_workers() > 0:
            self.workerless_since = None
            return
        self.workerless_since = self.workerless_since or now
        if now - self.workerless_since >= self.worker_timeout_s:
            raise NoWorkers(f"the Dask cluster has had no worker for {self.worker_timeout_s:g} s")

    def _completed(self, future: Future) -> None:
        task, attempt, born = self.pending.pop(future)
        try:
            row = future.result()
        except Exception as error:  # noqa: BLE001 - the worker, not the task, failed
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise  # a full disk (the sweep's DiskFull) stops the run: every next task would fail too
            broken = isinstance(error, BrokenExecutor)
            if broken and born == self.generation:
                self.executor, self.generation = self.renew(), self.generation + 1
            # A broken pool fails its queued tasks too: only those that had claimed are
            # charged. Any other error came from the task itself, which therefore ran.
            started = not broken or self.claims is None or (self.claims / task.key).exists()
            if self.claims is not None:
                (self.claims / task.key).unlink(missing_ok=True)
            if not started or attempt < MAX_ATTEMPTS:
                self.submit(task, attempt + started)
                return
            row = self.lost(task, error, attempt)
        self.sink(row)
        self.progress.advance(row)


def drive(workers: Workers, tasks: Sequence[Task], work: Callable[..., dict[str, Any]],
          lost: Callable[[Any, BaseException, int], dict[str, Any]], sink: Callable[[dict[str, Any]], None],
          progress: Progress, worker_timeout_s: float = NO_WORKERS_TIMEOUT_S) -> None:
    """Run ``work(task)`` for every task on ``workers``, each row to ``sink`` as it comes.

    ``work`` must be picklable and accept ``claims=`` (a directory name), which it passes to
    :func:`claimed` around the task, when the executor is a local process pool."""
    with tempfile.TemporaryDirectory(prefix="claims-") as claims:
        local_pool = isinstance(workers.executor, ProcessPoolExecutor)
        claims_dir = Path(claims) if local_pool else None
        _Driver(workers, work, lost, claims_dir, sink, progress, worker_timeout_s).run(tasks)
