"""Where cells run: in this process, in a local process pool, or on Dask.

:func:`open_executor` gives a :class:`Workers`: a ``concurrent.futures.Executor`` for a sweep,
a function that replaces it after a worker died (a dead process breaks a whole process pool)
and, on Dask, where workers can vanish for good, a count of the workers alive.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

__all__ = ["NO_WORKERS_TIMEOUT_S", "InProcessExecutor", "NoWorkers", "Workers", "open_executor", "stop_workers"]

#: Seconds a sweep waits on a Dask cluster that has no worker before it gives up. A nanny
#: restarts a killed worker within seconds; a worker started without one (``--no-nanny``),
#: or a cluster whose workers all left, never comes back, and the sweep used to wait forever.
NO_WORKERS_TIMEOUT_S = 120.0


class NoWorkers(RuntimeError):
    """A Dask cluster has had no worker for longer than the sweep would wait."""


class Workers(NamedTuple):
    """An executor for a sweep, with what the driver needs to keep it working."""

    executor: Executor
    #: A fresh executor, after a dead worker broke this one (the same one where it cannot break).
    renew: Callable[[], Executor]
    #: The workers alive now, where they can vanish for good (Dask); None where they cannot.
    count: Callable[[], int] | None = None


class InProcessExecutor(Executor):
    """Runs each submitted call at once, in this process (a single cell; debugging)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


#: Seconds between a pool worker's checks that its driver is still alive.
PARENT_CHECK_S = 0.5


def _die_with(parent: int) -> None:
    """A pool worker's initialiser: a daemon thread exits the worker as soon as its driver
    ``parent`` is gone. Killed alone (SIGTERM, kill -9), a driver used to leave its worker
    running on, re-parented to PID 1, finishing queued cells whose rows nobody would store
    and then blocking forever on a pipe it held itself."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(70)  # no clean-up to run: the cell's row has nowhere to go

    threading.Thread(target=watch, name="watch-driver", daemon=True).start()


def _process_pool(max_workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child inherits torch's thread pools in whatever state the
    # driver left them, which can deadlock; spawned workers start clean.
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with, initargs=(os.getpid(),))


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now, its running cells with it (an interrupted sweep): terminate the
    worker processes, then shut the pool down without waiting for their cells (waiting is
    what left an interrupted driver blocked for minutes)."""
    # The pool's own worker processes: ProcessPoolExecutor keeps them in ``_processes``.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _dask_client(scheduler: str, max_workers: int) -> Any:
    """A Dask client: a LocalCluster for ``"local"``, else a connection to ``scheduler``."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler == "local":
        # One thread per worker: each cell pins torch to one thread and sets Pyro's global
        # seed and param store, which threads of one process would share. No dashboard: it
        # would bind a port (and warn when 8787 is taken) for nothing.
        cluster = LocalCluster(n_workers=max_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster)
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "10s"}):
            return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise ValueError(f"cannot reach a Dask scheduler at {scheduler!r}: {type(error).__name__}: {error}") from None


def _count_dask_workers(client: Any) -> int:
    """The workers the scheduler knows now; 0 if the scheduler cannot be asked."""
    try:
        return len(client.nthreads())
    except (OSError, TimeoutError):  # a lost scheduler runs no cell either
        return 0


@contextmanager
def open_executor(scheduler: str | None, num_cells: int, max_workers: int | None = None,
                  executor: Executor | None = None) -> Iterator[Workers]:
    """The executor for a sweep, a function that replaces it after a worker died, and on
    Dask a count of the live workers (see :class:`Workers`). A given ``executor`` is used
    as it is, and neither replaced nor shut down.

    ``scheduler``: ``None`` (in-process for a single cell, else a local process pool of
    ``max_workers``, default one per core), ``"inprocess"``, ``"processes"``, ``"local"`` (a
    Dask LocalCluster) or a Dask scheduler address (``tcp://host:8786``). An unreachable
    address is a ``ValueError`` before any cell runs."""
    if executor is not None:
        yield Workers(executor, lambda: executor)
        return
    workers = max(1, min(max_workers or os.cpu_count() or 1, max(num_cells, 1)))
    if scheduler in (None, "processes"):
        if scheduler is None and num_cells <= 1:
            yield Workers(InProcessExecutor(), InProcessExecutor)
            return
        pools = [_process_pool(workers)]

        def renew() -> Executor:
            pools[-1].shutdown(wait=False, cancel_futures=True)
            pools.append(_process_pool(workers))
            return pools[-1]

        try:
            yield Workers(pools[0], renew)
        except BaseException:  # an interrupt, or an error in the driver: the cells stop with it
            stop_workers(pools[-1])
            raise
        pools[-1].shutdown(wait=True, cancel_futures=True)
        return
    if scheduler == "inprocess":
        yield Workers(InProcessExecutor(), InProcessExecutor)
        return
    client = _dask_client(scheduler, workers)
    try:
        # pure=False: a cell is a fresh computation each time it is submitted (a retry must
        # not be answered from Dask's cache of a lost result).
        executor = client.get_executor(pure=False)
        yield Workers(executor, lambda: executor, lambda: _count_dask_workers(client))
    finally:
        cluster = client.cluster if scheduler == "local" else None
        client.close()
        if cluster is not None:
            cluster.close()
