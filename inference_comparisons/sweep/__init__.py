"""Sweeps: grids of cells (model, target, method, budget, seed), run on an executor, stored.

- :mod:`.plan`: the grid and the data, from arguments or a TOML sweep file;
- :mod:`.cell`: one cell in a worker (run, score, InferenceData, row);
- :mod:`.executors`: in-process, a local process pool, or Dask;
- :mod:`.progress`: the progress bar;
- :mod:`.driver`: tasks on an executor, each dead worker's task retried, then failed (the
  sweep's cells and calibration's simulations);
- :mod:`.run`: the sweep, resumable through the store, and :func:`compare`.
"""

from inference_comparisons.sweep.cell import run_cell
from inference_comparisons.sweep.executors import NoWorkers, open_executor
from inference_comparisons.sweep.plan import DEFAULT_NUM_DATAPOINTS, SweepConfig, load_data, parse_ladders, plan
from inference_comparisons.sweep.run import Interrupted, check_output_directory, compare, run_sweep

__all__ = ["DEFAULT_NUM_DATAPOINTS", "Interrupted", "NoWorkers", "SweepConfig", "check_output_directory", "compare", "load_data",
           "open_executor", "parse_ladders", "plan", "run_cell", "run_sweep"]
