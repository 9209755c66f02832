"""Performance comparisons, side by side, as ratios (ARCHITECTURE.md §2). Run one with
``python -m benchmarks.bench_<name>``."""

import os
import platform
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent


def machine() -> str:
    """The CPU, its cores and the OS, for a benchmark's header."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


@contextmanager
def worktree(rev: str, path: Path) -> Iterator[Path]:
    """A detached ``git worktree`` of this repository at ``rev``, at ``path``, removed after:
    the code as it was, to run side by side with the code as it is."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=True)
