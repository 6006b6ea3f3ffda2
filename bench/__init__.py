"""Benchmarks of the fallback pipeline: figures printed, never asserted (`make bench`)."""
