"""The benchmarks are not run by `make test`, so a refactor of what they import goes
unnoticed until someone runs one (bench/inbox.py imported a function that had moved):
every bench module must at least import."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize(
    "module", sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")
)
def test_every_bench_module_imports(module: str) -> None:
    importlib.import_module(f"bench.{module}")
