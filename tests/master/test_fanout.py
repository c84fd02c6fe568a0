"""Fan-out to real standard nodes: parallel, bounded per node, acked after it settles."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from kuno.master.app import create_app
from kuno.standard.app import create_app as create_standard
from tests.e2e.cluster import BlackHole, RunningApp, standard_settings
from tests.master.conftest import account, open_socket
from tests.master.test_websocket import send_frame
from tests.support.pouchdb import PouchServer, free_port, http_json

Starter = Callable[..., Awaitable[RunningApp]]


async def alice_for_bob(
    session: aiohttp.ClientSession, master: RunningApp
) -> aiohttp.ClientWebSocketResponse:
    """Users alice and bob registered on `master`, and alice's socket."""
    alice = await account(session, master, "alice")
    await account(session, master, "bob")
    return await open_socket(session, master, alice)


async def sent_at(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> float:
    """Sends `frame`; returns the time.monotonic() of just before, in seconds."""
    started = time.monotonic()
    await ws.send_json(frame)
    return started


@pytest.fixture
async def nodes(
    couchdb_cluster: list[PouchServer], database: str, public_key_file: Path
) -> AsyncIterator[list[RunningApp]]:
    """Two real standard nodes, each on its own server."""
    running = []
    for index, server in enumerate(couchdb_cluster[:2]):
        settings = standard_settings(server, f"node{index + 1}", database, public_key_file)
        running.append(await RunningApp().start(create_standard(settings)))
    yield running
    for node in running:
        await node.stop()


@pytest.fixture
async def black_holes() -> AsyncIterator[list[BlackHole]]:
    holes = [await BlackHole().start() for _ in range(3)]
    yield holes
    for hole in holes:
        await hole.stop()


@pytest.fixture
async def start_master(make_master_settings: Any) -> AsyncIterator[Starter]:
    started: list[RunningApp] = []

    async def start(**overrides: Any) -> RunningApp:
        master = await RunningApp().start(create_app(make_master_settings(**overrides)))
        started.append(master)
        return master

    yield start
    for master in started:
        await master.stop()


async def test_hung_nodes_cost_one_timeout_in_parallel_and_the_ack_counts_the_rest(
    start_master: Starter, nodes: list[RunningApp], black_holes: list[BlackHole], database: str
) -> None:
    urls = [nodes[0].url, black_holes[0].url, nodes[1].url, black_holes[1].url, black_holes[2].url]
    master = await start_master(storage_enabled=True, standard_node_urls=urls, store_timeout=1.0)
    async with aiohttp.ClientSession() as session:
        ws = await alice_for_bob(session, master)
        frame = send_frame("bob")
        started = await sent_at(ws, frame)
        ack = await ws.receive_json(timeout=10)
        elapsed = time.monotonic() - started
    assert ack == {"type": "ack", "id": frame["id"], "delivered": False, "stored": 2, "nodes": 5}
    # Acked after the hung nodes' timeout, and only one timeout: asked one after another,
    # the three would have taken 3 s.
    assert 0.9 <= elapsed < 2.5


async def test_shutdown_acks_the_fan_out_in_flight_then_closes_with_1001(
    start_master: Starter, nodes: list[RunningApp], black_holes: list[BlackHole]
) -> None:
    urls = [nodes[0].url, black_holes[0].url]
    master = await start_master(storage_enabled=True, standard_node_urls=urls, store_timeout=1.0)
    async with aiohttp.ClientSession() as session:
        ws = await alice_for_bob(session, master)
        in_flight = send_frame("bob")
        started = await sent_at(ws, in_flight)
        await asyncio.sleep(0.2)
        stopping = asyncio.create_task(master.stop())
        ack = await ws.receive_json(timeout=5)
        acked_after = time.monotonic() - started
        closing = await ws.receive(timeout=5)
        await stopping
    # The hung node's timeout passed before the ack; the socket closed after it.
    assert acked_after >= 0.9
    assert ack == {
        "type": "ack",
        "id": in_flight["id"],
        "delivered": False,
        "stored": 1,
        "nodes": 2,
    }
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY


async def test_health_reports_couchdb_and_each_node(
    start_master: Starter, nodes: list[RunningApp]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        master = await start_master(
            storage_enabled=True, standard_node_urls=[nodes[0].url, nodes[1].url]
        )
        async with session.get(f"{master.url}/health") as response:
            healthy = await response.json()
        assert response.status == 200
        master = await start_master(storage_enabled=True, standard_node_urls=[nodes[0].url, dead])
        async with session.get(f"{master.url}/health") as response:
            degraded = await response.json()
        assert response.status == 200
        master = await start_master(storage_enabled=True, standard_node_urls=[dead])
        async with session.get(f"{master.url}/health") as response:
            down = await response.json()
        assert response.status == 503
    assert healthy["status"] == "ok"
    assert healthy["storage"] == "enabled"
    assert [c["reachable"] for c in healthy["couchdb"]] == [True]
    assert [n["url"] for n in healthy["standardNodes"]] == [nodes[0].url, nodes[1].url]
    assert [n["status"] for n in healthy["standardNodes"]] == ["ok", "ok"]
    assert degraded["status"] == "degraded"
    assert [n["reachable"] for n in degraded["standardNodes"]] == [True, False]
    assert down["status"] == "down"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_routing_storage_per_node_latency_and_errors(
    start_master: Starter,
    nodes: list[RunningApp],
    couchdb_cluster: list[PouchServer],
    database: str,
) -> None:
    urls = [nodes[0].url, nodes[1].url]
    master = await start_master(storage_enabled=True, standard_node_urls=urls)
    async with aiohttp.ClientSession() as session:
        alice = await account(session, master, "alice")
        bob = await account(session, master, "bob")
        bob_ws = await open_socket(session, master, bob)
        ws = await open_socket(session, master, alice)
        frame = send_frame("bob")
        await ws.send_json(frame)
        assert (await ws.receive_json(timeout=5))["stored"] == 2
        assert (await bob_ws.receive_json(timeout=5))["id"] == frame["id"]
        await ws.send_str("nonsense")
        assert (await ws.receive_json(timeout=5))["type"] == "error"
        async with session.get(f"{master.url}/metrics") as response:
            assert response.status == 200
            metrics = samples(await response.text())
    for server in couchdb_cluster[:2]:
        assert http_json("GET", f"{server.db_url(database)}/{frame['id']}")[0] == 200
    assert metrics[("kuno_master_messages_routed_total", ())] == 1
    assert metrics[("kuno_master_messages_delivered_online_total", ())] == 1
    for url in urls:
        stored = ("kuno_master_node_stores_total", (("node", url), ("outcome", "stored")))
        assert metrics[stored] == 1
    assert metrics[("kuno_master_fanout_seconds_count", ())] == 1
    assert metrics[("kuno_master_frame_errors_total", (("kind", "invalid_frame"),))] == 1
    assert metrics[("kuno_master_websockets", ())] == 2


async def test_a_resend_stores_the_identical_document_with_the_first_timestamp(
    start_master: Starter,
    nodes: list[RunningApp],
    couchdb_cluster: list[PouchServer],
    database: str,
    public_key_file: Path,
) -> None:
    # The two nodes' databases are not replicated: each copy comes from the master alone.
    urls = [nodes[0].url, nodes[1].url]
    master = await start_master(storage_enabled=True, standard_node_urls=urls)
    async with aiohttp.ClientSession() as session:
        ws = await alice_for_bob(session, master)
        await nodes[1].stop()
        frame = send_frame("bob")
        await ws.send_json(frame)
        assert (await ws.receive_json(timeout=5))["stored"] == 1
        await asyncio.sleep(0.05)  # a later clock: a new timestamp would differ
        settings = standard_settings(couchdb_cluster[1], "node2", database, public_key_file)
        await nodes[1].start(create_standard(settings))
        await ws.send_json(frame)
        assert (await ws.receive_json(timeout=5))["stored"] == 2
    copies = [
        http_json("GET", f"{server.db_url(database)}/{frame['id']}?conflicts=true")[1]
        for server in couchdb_cluster[:2]
    ]
    assert copies[0] == copies[1]  # same timestamp, expiresAt and so the same revision
    assert copies[0]["_rev"].startswith("1-")
    assert copies[0]["expiresAt"] - copies[0]["timestamp"] == 30 * 24 * 3600 * 1000


async def senders(
    session: aiohttp.ClientSession, master: RunningApp, count: int
) -> list[aiohttp.ClientWebSocketResponse]:
    """`count` senders' sockets, each of its own account."""
    return [
        await open_socket(session, master, await account(session, master, f"sender{i}"))
        for i in range(count)
    ]


async def send_all(
    sockets: list[aiohttp.ClientWebSocketResponse], frames: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Send every frame at once over the sockets; every socket's replies by id."""
    for n, frame in enumerate(frames):
        await sockets[n % len(sockets)].send_json(frame)
    replies: dict[str, dict[str, Any]] = {}
    for n, ws in enumerate(sockets):
        for _ in frames[n :: len(sockets)]:
            reply = await ws.receive_json(timeout=10)
            replies[reply["id"]] = reply
    return replies


async def test_concurrent_sends_are_coalesced_into_batches_and_each_acked_with_its_count(
    start_master: Starter,
    nodes: list[RunningApp],
    couchdb_cluster: list[PouchServer],
    database: str,
) -> None:
    urls = [nodes[0].url, nodes[1].url]
    master = await start_master(
        storage_enabled=True, standard_node_urls=urls, store_batches_in_flight=1
    )
    async with aiohttp.ClientSession() as session:
        await account(session, master, "bob")
        sockets = await senders(session, master, 4)
        frames = [send_frame("bob") for _ in range(60)]
        replies = await send_all(sockets, frames)
        async with session.get(f"{master.url}/metrics") as response:
            metrics = samples(await response.text())
    assert {r["id"]: (r["type"], r["stored"], r["nodes"]) for r in replies.values()} == {
        frame["id"]: ("ack", 2, 2) for frame in frames
    }
    for server in couchdb_cluster[:2]:
        assert server.all_ids(database) == {frame["id"] for frame in frames}
    for url in urls:
        batches = metrics[("kuno_master_store_batch_size_count", (("node", url),))]
        in_batches = metrics[("kuno_master_store_batch_size_sum", (("node", url),))]
        assert in_batches == 60
        assert batches < 60  # messages that came while a batch was out went together
        stored = ("kuno_master_node_stores_total", (("node", url), ("outcome", "stored")))
        assert metrics[stored] == 60


async def test_a_hung_node_under_concurrent_sends_costs_each_message_one_timeout_at_most(
    start_master: Starter, nodes: list[RunningApp], black_holes: list[BlackHole]
) -> None:
    urls = [nodes[0].url, black_holes[0].url, nodes[1].url]
    master = await start_master(storage_enabled=True, standard_node_urls=urls, store_timeout=1.0)
    async with aiohttp.ClientSession() as session:
        await account(session, master, "bob")
        sockets = await senders(session, master, 4)
        started = time.monotonic()
        first = await send_all(sockets, [send_frame("bob") for _ in range(20)])
        # Sent while the hung node's first batch is still out: these wait in its queue.
        second = await send_all(sockets, [send_frame("bob") for _ in range(20)])
        elapsed = time.monotonic() - started
    for reply in [*first.values(), *second.values()]:
        assert (reply["type"], reply["stored"], reply["nodes"]) == ("ack", 2, 3)
    # One timeout per round, not one per batch the hung node would have had to take.
    assert 1.8 <= elapsed < 4.0


async def test_a_message_a_node_refuses_fails_alone_and_its_batch_is_stored(
    start_master: Starter,
    couchdb_cluster: list[PouchServer],
    database: str,
    public_key_file: Path,
) -> None:
    # A node with a smaller ciphertext cap than the master's refuses the batch (413):
    # the master sends those messages one by one, so only the big one fails.
    small = standard_settings(couchdb_cluster[0], "node1", database, public_key_file)
    node = await RunningApp().start(
        create_standard(small.model_copy(update={"max_ciphertext_bytes": 64}))
    )
    try:
        master = await start_master(
            storage_enabled=True, standard_node_urls=[node.url], store_batches_in_flight=1
        )
        async with aiohttp.ClientSession() as session:
            await account(session, master, "bob")
            sockets = await senders(session, master, 4)
            big = send_frame("bob", ciphertext=base64.b64encode(b"c" * 200).decode())
            frames = [send_frame("bob") for _ in range(10)]
            frames[5:5] = [big]
            replies = await send_all(sockets, frames)
    finally:
        await node.stop()
    assert replies.pop(big["id"])["type"] == "error"
    assert {r["id"]: (r["type"], r["stored"]) for r in replies.values()} == {
        frame["id"]: ("ack", 1) for frame in frames if frame is not big
    }
    assert couchdb_cluster[0].all_ids(database) == {
        frame["id"] for frame in frames if frame is not big
    }


@web.middleware
async def without_batch_route(request: web.Request, handler: Any) -> web.StreamResponse:
    """A standard node of a release before POST /messages/batch."""
    if request.path == "/messages/batch":
        raise web.HTTPNotFound()
    return await handler(request)


async def test_a_node_without_the_batch_route_gets_each_message_alone(
    start_master: Starter,
    nodes: list[RunningApp],
    couchdb_cluster: list[PouchServer],
    database: str,
    public_key_file: Path,
) -> None:
    # During a rollback the storage nodes go back to the old release first.
    old = create_standard(standard_settings(couchdb_cluster[2], "old", database, public_key_file))
    old.middlewares.append(without_batch_route)
    old_node = await RunningApp().start(old)
    try:
        master = await start_master(
            storage_enabled=True, standard_node_urls=[nodes[0].url, old_node.url]
        )
        async with aiohttp.ClientSession() as session:
            await account(session, master, "bob")
            sockets = await senders(session, master, 4)
            frames = [send_frame("bob") for _ in range(20)]
            replies = await send_all(sockets, frames)
            resent = await send_all(sockets[:1], frames[:1])  # already there: 200, still stored
    finally:
        await old_node.stop()
    assert {r["id"]: (r["type"], r["stored"]) for r in replies.values()} == {
        frame["id"]: ("ack", 2) for frame in frames
    }
    assert [(r["type"], r["stored"]) for r in resent.values()] == [("ack", 2)]
    for server in (couchdb_cluster[0], couchdb_cluster[2]):
        assert {frame["id"] for frame in frames} <= server.all_ids(database)
