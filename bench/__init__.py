"""The throughput, latency and memory benchmark: `python bench/run.py` (see docs/benchmarks.md)."""
