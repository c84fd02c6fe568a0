"""The deployed Prometheus sees a storage node go down and come back.

A CouchDB container is stopped: within a bound the alerts KunoStorageNodeDown (its node)
and KunoReplicationLinkNotRunning (a link into or out of it) fire in the scenario's
Prometheus (GET /api/v1/alerts); once it is started again they clear. The scenario's
kuno.yml makes Prometheus scrape and evaluate every 5 s with 10 s `for:` durations.
"""

from __future__ import annotations

import time

import pytest
import yaml
from kunomol import Prometheus, System, about, wait_until

from tests.support.system import docker

# Seconds: the standard node notices (its own look at CouchDB), a scrape (5 s), the
# rule's `for:` (10 s) and an evaluation (5 s), with room for a loaded machine.
FIRE_BOUND = 90
# After the start: CouchDB answers, the pulls run again, a scrape and an evaluation.
CLEAR_BOUND = 120


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
