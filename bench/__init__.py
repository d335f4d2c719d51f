"""Benchmarks with same-run baselines; `make bench` runs them (README, "Performance")."""
