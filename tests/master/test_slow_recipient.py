"""A recipient whose socket cannot keep up costs no sender its answer (issue 11, item 1)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kuno.master.app import create_app
from tests.e2e.cluster import RunningApp
from tests.master.conftest import account, open_socket
from tests.master.test_websocket import b64, send_frame
from tests.support.pouchdb import PouchServer, http_json

MESSAGES = 100
CIPHERTEXT_BYTES = 48 * 1024
STORE_TIMEOUT = 3.0


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket whose kernel buffer fills after a few kilobytes."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.fixture
async def master(make_master_settings: Any, node: RunningApp) -> AsyncIterator[RunningApp]:
    settings = make_master_settings(
        storage_enabled=True,
        standard_node_urls=[node.url],
        store_timeout=STORE_TIMEOUT,
        send_burst=MESSAGES,
        send_per_second=1000.0,
        # Also the time a closed slow socket gets to read its close frame.
        heartbeat=120.0,
    )
    running = await RunningApp().start(create_app(settings))
    yield running
    await running.stop()


@contextlib.asynccontextmanager
async def alice_and_a_bob_who_never_reads(
    master: RunningApp,
) -> AsyncIterator[
    tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse]
]:
    """(alice's session, alice's socket, bob's socket): two new accounts, each online; bob's
    socket is on a small kernel buffer that nobody reads. Both closed on exit."""
    never_reads = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with (
        aiohttp.ClientSession() as session,
        aiohttp.ClientSession(connector=never_reads) as bob_session,
    ):
        alice = await open_socket(session, master, await account(session, master, "alice"))
        bob = await open_socket(bob_session, master, await account(session, master, "bob"))
        yield session, alice, bob


async def test_a_recipient_that_never_reads_costs_no_sender_its_answer(
    master: RunningApp, couchdb: PouchServer, database: str
) -> None:
    async with alice_and_a_bob_who_never_reads(master) as (session, alice, bob):
        frames = [send_frame("bob", ciphertext=b64(CIPHERTEXT_BYTES)) for _ in range(MESSAGES)]
        started = time.monotonic()
        for frame in frames:
            await alice.send_json(frame)
        answers: dict[str, dict[str, Any]] = {}
        while len(answers) < MESSAGES:
            # Before the fix some sends were never answered: this timed out.
            reply = await alice.receive_json(timeout=20)
            answers[reply["id"]] = reply
        elapsed = time.monotonic() - started
        async with session.get(f"{master.url}/health") as response:
            sockets = (await response.json())["websockets"]
        # Bob reads at last: what was buffered, then the documented close code.
        pushed = 0
        while (message := await bob.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
            pushed += 1
        bob_close = (message.type, message.data)
    acks = {id_: answer for id_, answer in answers.items() if answer["type"] == "ack"}
    # A node slower than the store timeout on this machine answers an honest error.
    errors = [answer["reason"] for answer in answers.values() if answer["type"] != "ack"]
    assert all("not stored" in reason for reason in errors), errors
    assert all(answer["stored"] == 1 for answer in acks.values())
    undelivered = [id_ for id_, answer in acks.items() if not answer["delivered"]]
    assert undelivered, "bob never read, yet every message was delivered"
    assert elapsed < 60
    # Not delivered means still stored, to be listed when bob comes back.
    status, listing = http_json(
        "POST", f"{couchdb.db_url(database)}/_all_docs", {"keys": undelivered}
    )
    assert status == 200
    assert all("error" not in row and not row["value"].get("deleted") for row in listing["rows"])
    assert sockets == 1  # alice's; bob's was closed
    assert bob_close == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.TRY_AGAIN_LATER)
    assert pushed < MESSAGES


async def test_a_sender_whose_recipient_stalls_still_gets_each_answer_in_time(
    master: RunningApp,
) -> None:
    """Each answer within the bound: the push, the store and the ack, each timed out."""
    async with alice_and_a_bob_who_never_reads(master) as (_, alice, _):
        slowest = 0.0
        for _ in range(12):
            frame = send_frame("bob", ciphertext=b64(CIPHERTEXT_BYTES))
            started = time.monotonic()
            await alice.send_json(frame)
            reply = await asyncio.wait_for(alice.receive_json(), timeout=20)
            slowest = max(slowest, time.monotonic() - started)
            assert reply["id"] == frame["id"]
    assert slowest < 3 * STORE_TIMEOUT + 2


class Broken(Exception):
    """An exception class aiohttp is not known to raise."""


@pytest.mark.parametrize(
    "failure", [asyncio.CancelledError, Broken, OSError, ValueError, RuntimeError, TimeoutError]
)
async def test_whatever_a_recipient_socket_raises_the_sender_gets_its_answer(
    start_master: Any, failure: type[BaseException]
) -> None:
    """A CancelledError nobody asked for (aiohttp's shared drain waiter, cancelled) is one."""
    from kuno.master import keys
    from tests.master.conftest import register
    from tests.master.test_websocket import connect

    master = await start_master()
    alice = await connect(master, await register(master, "alice"))
    bob = await connect(master, await register(master, "bob"))
    (connection,) = master.app[keys.ROUTER].connections["bob"]

    async def fails(_: str, compress: int | None = None) -> None:
        raise failure()

    connection.socket.send_str = fails  # type: ignore[method-assign]
    frame = send_frame("bob")
    await alice.send_json(frame)
    answer = await alice.receive_json(timeout=10)
    assert (answer["type"], answer["id"], answer["delivered"]) == ("ack", frame["id"], False)
    closing = await bob.receive(timeout=10)
    assert (closing.type, closing.data) == (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSCloseCode.TRY_AGAIN_LATER,
    )
    assert "bob" not in master.app[keys.ROUTER].connections


async def test_a_send_cancelled_for_real_still_ends_cancelled(start_master: Any) -> None:
    """Answering whatever happens underneath must not swallow a real cancellation."""
    from kuno.master import keys
    from kuno.master.routing import SendFrame
    from tests.master.conftest import register
    from tests.master.test_websocket import connect

    master = await start_master(store_timeout=30.0)
    sockets = [await connect(master, await register(master, name)) for name in ("alice", "bob")]
    router = master.app[keys.ROUTER]
    (alice,) = router.connections["alice"]
    (bob,) = router.connections["bob"]

    async def hangs(_: str, compress: int | None = None) -> None:
        await asyncio.Event().wait()

    bob.socket.send_str = hangs  # type: ignore[method-assign]
    task = asyncio.create_task(router.answer_send(alice, SendFrame(**send_frame("bob"))))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert not any(ws.closed for ws in sockets)
