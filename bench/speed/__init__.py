"""Throughput, latency and scale benchmark (issue 5): `python -m bench.speed [--quick]`."""
