"""The sweep's progress: a rich bar in a terminal (cells done/total, failures, elapsed,
ETA); in a log (``make run > log``), a plain line at a steady pace, so that a long sweep
can be watched with ``tail -f``; and one final line either way."""

from __future__ import annotations

import time
from typing import Any, Mapping

__all__ = ["LOG_INTERVAL_S", "Progress"]

#: Seconds between progress lines in a log: often enough to watch, rare enough to read.
LOG_INTERVAL_S = 30.0


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class Progress:
    """Progress of a sweep of ``total`` cells (``skipped`` were already stored); ``what`` and
    ``unit`` name them otherwise (a calibration's simulations)."""

    def __init__(self, total: int, skipped: int, console: Any | None, enabled: bool,
                 log_interval_s: float | None = None, what: str = "sweep", unit: str = "cells"):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = console if console is not None else Console()
        self.total, self.skipped, self.start = total, skipped, time.perf_counter()
        self.done = self.failures = 0
        self.log_interval_s = LOG_INTERVAL_S if log_interval_s is None else log_interval_s
        self.last_line = self.start
        self.what, self.unit = what, unit
        self.bar = None
        if enabled and self.console.is_terminal and total:
            self.bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                                TextColumn("failures: {task.fields[failures]}"), TextColumn("elapsed"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=self.console, transient=False)
            self.task = self.bar.add_task(what, total=total, failures=0)
            self.bar.start()
        self.enabled = enabled

    def advance(self, row: Mapping[str, Any]) -> None:
        """A cell (a unit) finished."""
        self.done += 1
        self.failures += row.get("status") == "failed"
        if self.bar is not None:
            self.bar.update(self.task, advance=1, failures=self.failures)
        self.tick()

    def tick(self) -> None:
        """In a log, a line if the last one is ``log_interval_s`` old (the driver calls this
        while it waits, so a log shows progress even while one long cell runs)."""
        now = time.perf_counter()
        if self.bar is not None or not self.enabled or self.done >= self.total or now - self.last_line < self.log_interval_s:
            return
        self.last_line, elapsed = now, now - self.start
        estimate = (f", about {_duration(elapsed / self.done * (self.total - self.done))} to go" if self.done
                    else "")
        self.console.print(f"{self.what}: {self.done} of {self.total} {self.unit} done ({self.failures} failed), "
                           f"{_duration(elapsed)} elapsed{estimate}", highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.enabled:
            self.console.print(f"{self.what}: {self.done} of {self.total} {self.unit} run ({self.failures} failed), "
                               f"{self.skipped} already stored, in {time.perf_counter() - self.start:.1f} s",
                               highlight=False)
