"""Performance comparisons, side by side, as ratios (ARCHITECTURE.md §2). Run one with
``python -m benchmarks.bench_<name>``."""
