"""Every molecule scenario (molecule/*/molecule.yml) as a plain pytest test: `molecule test`
deploys the real playbooks on this machine's Docker under a project of the scenario's own,
proves its scenario and removes everything it made.

    .venv/bin/pytest tests/molecule            # all of them, one after the other
    .venv/bin/pytest tests/molecule -k partition

They share the images (built once: by tests/deploy when it ran first, else by the first
converge; reused by the others) and one release version, fixed for the session even when the
working tree changes meanwhile. Their configuration is .config/molecule/config.yml, merged
under each molecule.yml.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.system import REPO, docker_answers, release_version

VENV_BIN = REPO / ".venv" / "bin"
SCENARIOS = sorted(path.parent.name for path in (REPO / "molecule").glob("*/molecule.yml"))
SCENARIO_TIMEOUT = 1500  # seconds; a stuck scenario fails instead of hanging the suite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def molecule_env() -> dict[str, str]:
    if not (VENV_BIN / "molecule").exists():
        pytest.skip("no molecule in .venv: run make venv")
    if not docker_answers():
        pytest.skip("no Docker engine answers (scripts/setup-docker starts one)")
    release = os.environ.get("KUNO_RELEASE") or release_version()
    return dict(
        os.environ,
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        KUNO_RELEASE=release,
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
        PY_COLORS="0",
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(
    scenario: str, molecule_env: dict[str, str], tmp_path: Path, record_property
) -> None:
    log = tmp_path / f"molecule-{scenario}.log"  # followed while it runs: tail -f
    print(f"molecule scenario {scenario}: log {log}")
    started = time.monotonic()
    with log.open("w") as output:
        result = subprocess.run(
            [str(VENV_BIN / "molecule"), "test", "--scenario-name", scenario],
            cwd=REPO,
            env=molecule_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=SCENARIO_TIMEOUT,
        )
    seconds = time.monotonic() - started
    record_property("seconds", round(seconds, 1))
    print(f"molecule scenario {scenario}: {seconds:.0f} s, exit {result.returncode}")
    assert result.returncode == 0, log.read_text()[-12000:]
