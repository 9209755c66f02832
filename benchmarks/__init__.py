"""Performance comparisons, side by side, as ratios (ARCHITECTURE.md §2). Run one with
``python -m benchmarks.bench_<name>``."""

import os
import platform
from pathlib import Path


def machine() -> str:
    """The CPU, its cores and the OS, for a benchmark's header."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
