"""The sweep's progress: a rich bar in a terminal (cells done/total, failures, elapsed,
ETA); in a log, one final line."""

from __future__ import annotations

import time
from typing import Any, Mapping

__all__ = ["Progress"]


class Progress:
    """A rich progress bar in a terminal (cells done/total, failures, elapsed, ETA); in a log,
    nothing until :meth:`close` prints one final line."""

    def __init__(self, total: int, skipped: int, console: Any | None, enabled: bool):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = console if console is not None else Console()
        self.total, self.skipped, self.start = total, skipped, time.perf_counter()
        self.done = self.failures = 0
        self.bar = None
        if enabled and self.console.is_terminal and total:
            self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("failures: {task.fields[failures]}"), TextColumn("elapsed"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=self.console, transient=False)
            self.task = self.bar.add_task("sweep", total=total, failures=0)
            self.bar.start()
        self.enabled = enabled

    def advance(self, row: Mapping[str, Any]) -> None:
        self.done += 1
        self.failures += row.get("status") == "failed"
        if self.bar is not None:
            self.bar.update(self.task, advance=1, failures=self.failures)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.enabled:
            self.console.print(f"sweep: {self.done} of {self.total} cells run ({self.failures} failed), "
                               f"{self.skipped} already stored, in {time.perf_counter() - self.start:.1f} s")
