"""Fixtures of the scenarios' testinfra tests (molecule/<scenario>/tests/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "resources"))

from kunomol import System


@pytest.fixture(scope="session")
def system() -> System:
    return System(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]))
