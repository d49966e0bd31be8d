"""Benchmarks of the three flows and a naive baseline; the shared harness is in `harness/`."""
