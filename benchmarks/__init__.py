"""Benchmarks and the demo replay: commands that report numbers, not tests."""
