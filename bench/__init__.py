"""Benchmark suite of litellm-credits: ``python -m bench`` (see docs/BENCHMARKS.md)."""
