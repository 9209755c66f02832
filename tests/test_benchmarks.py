"""The bookkeeping of the side-by-side benchmarks (their timings are never tests)."""

from __future__ import annotations

import pandas as pd

from benchmarks.bench_make_run import compare


def _cells(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": "gmm", "dataset": "simulated", "target": "posterior", "method": method,
                          "budget": budget, "seed": 0, "status": "ok", "cell_s": seconds}
                         for method, budget, seconds in rows])


def test_make_run_comparison_times_the_cells_both_jobs_ran_apart_from_the_new_ones():
    base = _cells([("nuts", 50, 10.0), ("nuts", 500, 30.0), ("svi", 100, 2.0)])
    head = _cells([("nuts", 50, 5.0), ("nuts", 1000, 60.0), ("svi", 100, 2.0), ("chees", 1024, 4.0)])
    frame = compare(base, head).set_index("method")
    assert frame.loc["nuts"].tolist() == [2, 40.0, 2, 65.0, 1, 10.0, 5.0]  # nuts at 50 is the only common cell
    assert frame.loc["chees"].tolist() == [0, 0.0, 1, 4.0, 0, 0.0, 0.0]
    assert frame.loc["all"].tolist() == [3, 42.0, 4, 71.0, 2, 12.0, 7.0]
