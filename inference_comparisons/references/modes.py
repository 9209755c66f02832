"""The mode search of a gold-standard build (:func:`inference_comparisons.estimators.modes.find_modes`),
run once per build directory before any chain: NUTS chains do not cross between separated
modes, and R-hat notices only when a chain happens to start in another one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from zoo.base import Target

from inference_comparisons.estimators.modes import Mode, find_modes
from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.references.chains import save_atomically

__all__ = ["modes_of"]


def modes_of(problem: Target, directory: Path) -> tuple[list[Mode], dict]:
    """The mode search, run once per build directory: a resumed build keeps the mode its
    chains started from."""
    path = directory / "modes.pt"
    if path.exists():
        saved = torch.load(path)
        return [Mode(**mode) for mode in saved["modes"]], saved["summary"]
    modes, summary = find_modes(FlatPotential(problem))
    save_atomically({"modes": [asdict(m) for m in modes], "summary": summary}, path)
    return modes, summary
