"""The benchmark: `python -m bench` and its guard (docs/performance.md, BENCHMARKS.md)."""
