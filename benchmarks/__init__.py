"""Performance comparisons, side by side, as ratios (DESIGN.md §3). Run one with
``python -m benchmarks.bench_<name>``."""
