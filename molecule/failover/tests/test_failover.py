"""After the side effect (a standard node, then a CouchDB stopped and started again): every
node holds every message sent meanwhile, the same set everywhere, and runs normally."""

from __future__ import annotations

from kunomol import System, converged, describe, wait_until


def test_every_node_holds_every_message_sent_while_one_was_down(system: System) -> None:
    state = system.load()
    assert len(state["sent"]["standard-down"]) == 50
    assert len(state["sent"]["couchdb-down"]) == 50
    wait_until(
        lambda: converged(system, system.nodes),
        within=30,
        what=f"the same 100 messages on every node ({describe(system, system.nodes)})",
    )


def test_every_replication_runs_and_every_container_is_back(host, system: System) -> None:
    for node in system.nodes:
        assert system.replications_running(node), (node, system.replications(node))
    for name in system.containers:
        assert host.docker(name).is_running, name
    for node in system.nodes:
        wait_until(
            lambda node=node: (
                host.run(
                    "curl -fsS -o /dev/null http://127.0.0.1:%s/%s/health",
                    str(system.proxy_port),
                    node,
                ).rc
                == 0
            ),
            within=30,
            what=f"/{node}/health green through the proxy",
        )
