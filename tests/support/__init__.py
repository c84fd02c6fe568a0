"""Helpers the tests and benchmarks share: real servers, keys, messages."""
