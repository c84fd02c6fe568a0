"""playbooks/heal.yml on the deployed system: it finds every node's CouchDB, reads every
peer's newest changes for the stall test, and on a healthy mesh restarts nothing."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import Deployment

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NODES = 3
REPLICATIONS = NODES * (NODES - 1) * 2  # messages and users, from each other node


def test_heal_reads_every_source_and_changes_nothing_on_a_healthy_mesh(
    proxied: Deployment,
) -> None:
    run = proxied.run("playbooks/heal.yml", "-v")
    assert run.returncode == 0, run.output[-6000:]
    assert run.changed == 0, run.changed_tasks()
    # Every running pull was looked at (wait.yml's listing after it says `stalled: null`):
    # its source answered at the address heal found, and nothing was lacking.
    output = run.output
    assert len(re.findall(r"^\s*stalled: false$", output, re.MULTILINE)) == REPLICATIONS, output
    assert not re.search(r"stall_error: (?!null)", output), output
    # Every listing (configure's, heal's, wait's) names nothing to restart.
    assert len(re.findall(r"^\s*restart: \[\]$", output, re.MULTILINE)) >= NODES, output
    assert not re.search(r"^\s*restart:\n\s*-", output, re.MULTILINE), output
