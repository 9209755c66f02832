"""Importing ArviZ without its once-a-day notice about the 1.x refactor.

ArviZ 0.23 emits a FutureWarning at import time announcing 1.x; we pin ``<1`` on purpose
(ARCHITECTURE.md §8), and the notice would fail every test run under ``-W error``. This is the
one place it is silenced.
"""

from __future__ import annotations

import warnings
from types import ModuleType

__all__ = ["arviz"]


def arviz() -> ModuleType:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz as az
    return az
