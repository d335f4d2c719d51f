"""Benchmarks with same-run baselines; `make bench` runs them (see bench/README.md)."""
