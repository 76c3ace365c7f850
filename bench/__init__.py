"""The benchmark: `python -m bench` (README, "Benchmark")."""
