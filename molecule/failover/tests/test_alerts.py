"""The deployed Prometheus sees a storage node go down and come back.

A CouchDB container is stopped: within a bound the alerts KunoStorageNodeDown (its node)
and KunoReplicationLinkNotRunning (a link into or out of it) fire in the scenario's
Prometheus (GET /api/v1/alerts); once it is started again they clear. The scenario's
kuno.yml makes Prometheus scrape and evaluate every 5 s with 10 s `for:` durations.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from typing import Any

import pytest
import yaml
from kunomol import System, wait_until

# Seconds: the standard node notices (its own look at CouchDB), a scrape (5 s), the
# rule's `for:` (10 s) and an evaluation (5 s), with room for a loaded machine.
FIRE_BOUND = 90
# After the start: CouchDB answers, the pulls run again, a scrape and an evaluation.
CLEAR_BOUND = 120


def docker(*args: str) -> str:
    result = subprocess.run(  # noqa: S603 - docker by name, our own arguments
        ["docker", *args],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr.strip()}"
    return result.stdout.strip()


class Prometheus:
    def __init__(self, system: System) -> None:
        # host:port of the published 9090 (Docker picks the port for a test project).
        binding = docker("port", system.container("prometheus"), "9090/tcp").splitlines()[0]
        self.url = f"http://{binding}"

    def firing(self) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/alerts"  # http://127.0.0.1:<port>, from docker port
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            body = json.loads(response.read())
        return [a for a in body["data"]["alerts"] if a["state"] == "firing"]


def about(alerts: list[dict[str, Any]], node: str) -> dict[str, list[dict[str, str]]]:
    """The firing alerts that concern one storage node, by name (their labels)."""
    found: dict[str, list[dict[str, str]]] = {}
    for alert in alerts:
        labels = alert["labels"]
        if node in (labels.get("node"), labels.get("source"), labels.get("target")):
            found.setdefault(labels["alertname"], []).append(labels)
    return found


@pytest.fixture(scope="module")
def prometheus(system: System) -> Prometheus:
    return Prometheus(system)


@pytest.fixture(scope="module")
def stopped_node(system: System) -> str:
    variables = yaml.safe_load((system.scenario_dir / "kuno.yml").read_text())
    return variables["failover_couchdb_node"]


def test_a_stopped_couchdb_fires_node_down_and_link_not_running_and_both_clear(
    system: System, prometheus: Prometheus, stopped_node: str
) -> None:
    names = {"KunoStorageNodeDown", "KunoReplicationLinkNotRunning"}
    couchdb = system.container("couchdb", stopped_node)
    # The side effect stopped containers too: start from a quiet Prometheus.
    wait_until(
        lambda: not names & set(about(prometheus.firing(), stopped_node)),
        within=CLEAR_BOUND,
        what=f"no alert about {stopped_node} before the test",
        every=1,
    )
    docker("stop", couchdb)
    stopped = time.monotonic()
    try:
        fired = wait_until(
            lambda: names <= set(about(prometheus.firing(), stopped_node)),
            within=FIRE_BOUND,
            what=f"{sorted(names)} about {stopped_node} after its CouchDB stopped",
            every=1,
        )
        alerts = about(prometheus.firing(), stopped_node)
        assert {
            "severity": "critical",
            "node": stopped_node,
            "alertname": "KunoStorageNodeDown",
        } in [
            {k: v for k, v in labels.items() if k in ("severity", "node", "alertname")}
            for labels in alerts["KunoStorageNodeDown"]
        ], alerts
    finally:
        docker("start", couchdb)
    cleared = wait_until(
        lambda: not names & set(about(prometheus.firing(), stopped_node)),
        within=CLEAR_BOUND,
        what=f"{sorted(names)} about {stopped_node} cleared after its CouchDB started",
        every=1,
    )
    print(
        f"{stopped_node}'s CouchDB stopped: both alerts firing after {fired:.1f} s; "
        f"started after {time.monotonic() - stopped - cleared:.1f} s: cleared after {cleared:.1f} s"
    )
