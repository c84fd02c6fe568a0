"""Benchmarks: they print figures and ratios against the raw server; they are not tests."""
