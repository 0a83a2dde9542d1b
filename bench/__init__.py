"""Benchmarks: python -m bench.NAME (see bench/README.md)."""
