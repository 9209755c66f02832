"""An executor whose first futures fail as if their worker had died: the drivers' retries,
tested without killing processes."""

from __future__ import annotations

from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool


class FlakyExecutor(Executor):
    """Runs calls in this process, but its first ``num_deaths`` futures fail as a dead worker."""

    def __init__(self, num_deaths: int):
        self.num_deaths = num_deaths

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        if self.num_deaths > 0:
            self.num_deaths -= 1
            future.set_exception(BrokenProcessPool("a worker died"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future
