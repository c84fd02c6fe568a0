"""The node's replication links against real pouchdb-servers: /health names a missing
link, /metrics exports each link, and the watchdog restarts a stalled one."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from tests.support.pouchdb import PouchServer, eventually, http_json

pytestmark = pytest.mark.standin  # pouchdb-server's _replicator documents and checkpoints


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one series of a Prometheus text exposition, None when absent."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_health_and_metrics_name_a_missing_link(start_node, server_pair, database):
    node1, node2 = server_pair
    for server in server_pair:
        server.create_db(database)
    node = await node_of(start_node, node1, database)
    link = {"database": database, "source": "node2", "target": "node1"}
    doc_id = f"kuno-{database}-from-node2"

    # No replication document: a finding, not silence.
    health = await (await node.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["links"]["missing"] == [doc_id]
    assert health["links"]["expected"] == 1
    assert health["mesh"] == {"nodes": 2, "links_expected": 2, "complete": False}
    metrics = await (await node.get("/metrics")).text()
    assert sample(metrics, "kuno_replication_link_state", state="missing", **link) == 1
    assert sample(metrics, "kuno_replication_link_running", **link) == 0
    assert sample(metrics, "kuno_replication_links_expected", target="node1") == 1
    assert sample(metrics, "kuno_mesh_nodes") == 2

    # The role's link: running, nothing pending once it has caught up.
    http_json("PUT", node2.db_url(database) + "/early", {"n": 1})
    node1.replicate_from(node2, database, doc_id=doc_id)

    async def caught_up() -> dict | None:
        health = await (await node.get("/health")).json()
        [state] = health["links"]["links"]
        return health if state["state"] == "triggered" and state["changes_pending"] == 0 else None

    health = await eventually(caught_up)
    assert health["status"] == "ok"
    assert health["mesh"]["complete"] is True
    assert health["links"]["missing"] == health["links"]["not_running"] == []
    metrics = await (await node.get("/metrics")).text()
    assert sample(metrics, "kuno_replication_link_running", **link) == 1
    assert sample(metrics, "kuno_replication_link_changes_pending", **link) == 0
    assert sample(metrics, "kuno_replication_link_progress_age_seconds", **link) == 0
    assert sample(metrics, "kuno_couchdb_up") == 1
    # CouchDB's doc_count: the replicated message and the node's index design documents.
    _, info = http_json("GET", node1.db_url(database))
    assert (
        sample(metrics, "kuno_couchdb_database_documents", database=database) == info["doc_count"]
    )

    # An operator removes it (the stand-in survives: the image's entrypoint is preloaded).
    node1.remove_replication(doc_id)

    async def missing() -> dict | None:
        health = await (await node.get("/health")).json()
        return health if health["links"]["missing"] == [doc_id] else None

    health = await eventually(missing)
    assert health["status"] == "degraded"
    assert health["mesh"]["complete"] is False


async def node_of(start_node, couchdb: PouchServer, database: str, **overrides):
    """The standard node "node1" on `couchdb`, expecting a pull of `database` from
    "node2", looking at it every 0.2 s."""
    return await start_node(
        couchdb,
        node_name="node1",
        peers=["node2"],
        replicated_databases=[database],
        replication_poll_interval=0.2,
        **overrides,
    )


class FreezingRelay:
    """A TCP relay to a server that can freeze its changes feeds: once frozen, no byte of a
    connection that carried a `_changes` request goes through (a hung feed on a dead
    connection), while other requests pass."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = asyncio.Event()
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        feed = {"changes": False}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if up and b"/_changes" in data:
                        feed["changes"] = True
                    if feed["changes"]:
                        await self.thawed.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False)
        )

    async def close(self) -> None:
        self.thaw()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def relay(server_pair) -> AsyncIterator[FreezingRelay]:
    relay = FreezingRelay(urlsplit(server_pair[1].url).port or 0)
    await relay.start()
    yield relay
    await relay.close()


async def test_a_stalled_link_is_restarted_and_counted_once_per_stall_window(
    start_node, server_pair, database, relay
):
    """On pouchdb-server too the watchdog restarts a stalled link as a new job (a new
    `_replication_id`), as heal.yml does; CouchDB 3's restart is tests/standard/
    test_watchdog.py."""
    node1, node2 = server_pair
    doc_id = await stalling_link(node1, node2, database, relay)
    node = await node_of(start_node, node1, database, replication_stall_seconds=2)
    link = {"database": database, "source": "node2", "target": "node1"}
    await stall(node1, node2, database, relay)
    _, before = http_json("GET", f"{node1.url}/_replicator/{doc_id}")

    async def counted() -> str | None:
        metrics = await (await node.get("/metrics")).text()
        count = sample(metrics, "kuno_replication_watchdog_restarts_total", **link)
        return metrics if count else None

    metrics = await eventually(counted, within=30)
    assert sample(metrics, "kuno_replication_watchdog_enabled") == 1
    assert (
        sample(metrics, "kuno_replication_watchdog_restarts_total", outcome="restarted", **link)
        == 1
    )
    _, after = http_json("GET", f"{node1.url}/_replicator/{doc_id}")
    # A new job that runs (the replicator took a bare rewrite for a duplicate: no state).
    assert after["_replication_id"] != before["_replication_id"]
    assert after["_replication_state"] == "triggered"

    # Once per stall window, not at every look: the new job's feed is frozen too.
    await asyncio.sleep(1)
    metrics = await (await node.get("/metrics")).text()
    assert sample(metrics, "kuno_replication_watchdog_restarts_total", **link) == 1

    relay.thaw()  # the job carries the changes; the stall is over
    await eventually(lambda: {"stuck0", "stuck1", "stuck2"} <= node1.all_ids(database), within=30)

    async def recovered() -> dict | None:
        health = await (await node.get("/health")).json()
        return health if health["status"] == "ok" else None

    health = await eventually(recovered, within=30)
    assert health["links"]["stalled"] == []


async def stalling_link(
    node1: PouchServer, node2: PouchServer, database: str, relay: FreezingRelay
) -> str:
    """The role's pull of `database` from node2 into node1, through the relay."""
    for server in (node1, node2):
        server.create_db(database)
    doc_id = f"kuno-{database}-from-node2"
    source = node2.authenticated_db_url(database).replace(
        f":{urlsplit(node2.url).port}/", f":{relay.port}/"
    )
    status, body = http_json(
        "PUT",
        f"{node1.url}/_replicator/{doc_id}",
        {"source": source, "target": node1.authenticated_db_url(database), "continuous": True},
    )
    assert status in (201, 202), body
    return doc_id


async def stall(
    node1: PouchServer, node2: PouchServer, database: str, relay: FreezingRelay
) -> None:
    """Let the link carry one document, then freeze its changes feed and write three more."""
    http_json("PUT", node2.db_url(database) + "/before", {"n": 0})
    await eventually(lambda: "before" in node1.all_ids(database), within=20)
    relay.freeze()
    await asyncio.sleep(1)  # the feed's next request goes out into the frozen relay
    for n in range(3):
        http_json("PUT", node2.db_url(database) + f"/stuck{n}", {"n": n})


async def test_with_the_watchdog_off_a_stalled_link_is_only_reported(
    start_node, server_pair, database, relay
):
    node1, node2 = server_pair
    doc_id = await stalling_link(node1, node2, database, relay)
    node = await node_of(
        start_node, node1, database, replication_stall_seconds=2, replication_watchdog=False
    )
    await stall(node1, node2, database, relay)

    async def stalled() -> dict | None:
        health = await (await node.get("/health")).json()
        return health if health["links"]["stalled"] == [doc_id] else None

    health = await eventually(stalled, within=30)
    assert health["status"] == "degraded"
    await asyncio.sleep(1)
    metrics = await (await node.get("/metrics")).text()
    assert sample(metrics, "kuno_replication_watchdog_enabled") == 0
    assert sample(metrics, "kuno_replication_link_stalled", source="node2") == 1
    assert sample(metrics, "kuno_replication_watchdog_restarts_total") is None


async def test_status_is_health_without_the_details(start_node, server_pair, database):
    node1, _ = server_pair
    node1.create_db(database)
    node = await node_of(start_node, node1, database)
    health = await (await node.get("/health")).json()
    assert health["status"] == "degraded" and health["links"]["missing"]
    response = await node.get("/status")
    assert response.status == 200
    assert await response.json() == {"node": "node1", "status": "degraded"}
    node1.stop()
    response = await node.get("/status")
    assert response.status == 503
    assert await response.json() == {"node": "node1", "status": "down"}
