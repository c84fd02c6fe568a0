"""GET /ws: authentication, frame checks, limits and the storage-disabled mode."""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from kuno.master.app import create_app
from kuno.master.config import MasterSettings
from tests.master.conftest import MasterFactory, bearer, register


def b64(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def send_frame(to: str, **fields: Any) -> dict[str, Any]:
    frame = {
        "type": "send",
        "id": str(uuid.uuid4()),
        "to": to,
        "ciphertext": b64(40),
        "nonce": b64(24),
    }
    frame.update(fields)
    return frame


async def connect(master: TestClient, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await master.ws_connect("/ws", headers=bearer(token))
    assert await ws.receive_json(timeout=5) == {"type": "ready", "user": _subject(token)}
    return ws


async def alice_sends_to_bob(
    master: TestClient, to: str
) -> tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Users alice and bob each on a socket, and the frame alice sent `to` bob:
    (bob's socket, alice's socket, the frame)."""
    alice, bob = await register(master, "alice"), await register(master, "bob")
    bob_ws, alice_ws = await connect(master, bob), await connect(master, alice)
    frame = send_frame(to)
    await alice_ws.send_json(frame)
    return bob_ws, alice_ws, frame


def error_frame(frame: dict[str, Any], reason: str) -> dict[str, Any]:
    """The error frame that answers `frame` for `reason`."""
    return {"type": "error", "id": frame["id"], "reason": reason}


def _subject(token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["sub"]


async def test_without_storage_an_online_recipient_gets_the_message_and_the_ack_says_so(
    master: TestClient,
) -> None:
    bob_ws, alice_ws, frame = await alice_sends_to_bob(master, "bob")
    pushed = await bob_ws.receive_json(timeout=5)
    assert pushed.pop("timestamp") > 0
    assert pushed.pop("seq") > 0
    assert pushed == {
        "type": "message",
        "id": frame["id"],
        "from": "alice",
        "ciphertext": frame["ciphertext"],
        "nonce": frame["nonce"],
    }
    assert await alice_ws.receive_json(timeout=5) == {
        "type": "ack",
        "id": frame["id"],
        "delivered": True,
        "stored": 0,
        "nodes": 0,
        "storage": "disabled",
    }
    # Offline recipient, storage disabled: the ack says it was neither delivered nor stored.
    await bob_ws.close()
    frame = send_frame("bob")
    await alice_ws.send_json(frame)
    ack = await alice_ws.receive_json(timeout=5)
    assert (ack["delivered"], ack["storage"]) == (False, "disabled")


async def test_every_socket_of_the_recipient_gets_the_message(master: TestClient) -> None:
    alice, bob = await register(master, "alice"), await register(master, "bob")
    phone, laptop = await connect(master, bob), await connect(master, bob)
    frame = send_frame("bob")
    await (await connect(master, alice)).send_json(frame)
    assert (await phone.receive_json(timeout=5))["id"] == frame["id"]
    assert (await laptop.receive_json(timeout=5))["id"] == frame["id"]


async def test_a_send_to_a_name_in_another_case_reaches_that_account(
    master: TestClient,
) -> None:
    # "BOB" and "bob" are one account: the frame's `to` is the canonical user id.
    bob_ws, alice_ws, frame = await alice_sends_to_bob(master, "BOB")
    assert (await bob_ws.receive_json(timeout=5))["id"] == frame["id"]
    assert (await alice_ws.receive_json(timeout=5))["delivered"] is True


async def test_storage_disabled_is_said_clearly_in_the_log_at_start(
    make_master_settings: Any, caplog: pytest.LogCaptureFixture, aiohttp_client: Any
) -> None:
    caplog.set_level(logging.INFO, logger="kuno.master")
    settings: MasterSettings = make_master_settings(storage_enabled=False)
    await aiohttp_client(create_app(settings))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("STORAGE DISABLED" in line for line in warnings)


BAD_FRAMES = [
    ("not json", None, "not JSON"),
    ("[1, 2]", None, "JSON object"),
    (json.dumps({"type": "shout"}), None, "type must be"),
    (json.dumps(send_frame("bob", id="not-a-uuid")), "not-a-uuid", "UUID"),
    (json.dumps(send_frame("bob", id=str(uuid.uuid4()).upper())), "same", "canonical"),
    (json.dumps(send_frame("b o b")), "same", "to:"),
    (json.dumps(send_frame("bob", ciphertext="***")), "same", "base64"),
    (json.dumps(send_frame("bob", nonce=b64(65))), "same", "nonce"),
    (json.dumps(send_frame("bob", extra=1)), "same", "extra"),
    (json.dumps({"type": "received", "id": 7}), None, "id"),
]


@pytest.mark.parametrize(("text", "expected_id", "reason"), BAD_FRAMES)
async def test_a_bad_frame_gets_an_error_frame_and_the_connection_stays(
    master: TestClient, text: str, expected_id: str | None, reason: str
) -> None:
    alice = await register(master, "alice")
    await register(master, "bob")
    ws = await connect(master, alice)
    await ws.send_str(text)
    error = await ws.receive_json(timeout=5)
    assert error["type"] == "error"
    assert reason in error["reason"]
    if expected_id == "same":
        assert error["id"] == json.loads(text)["id"]
    else:
        assert error["id"] == expected_id
    # Still usable.
    good = send_frame("bob")
    await ws.send_json(good)
    assert (await ws.receive_json(timeout=5))["type"] == "ack"
    assert not ws.closed


async def test_a_binary_frame_is_an_error_and_the_connection_stays(master: TestClient) -> None:
    ws = await connect(master, await register(master, "alice"))
    await ws.send_bytes(b"\x00\x01")
    assert (await ws.receive_json(timeout=5))["reason"] == "send text frames"
    assert not ws.closed


async def test_an_unknown_recipient_gets_an_error_frame(master: TestClient) -> None:
    ws = await connect(master, await register(master, "alice"))
    frame = send_frame("nobody")
    await ws.send_json(frame)
    assert await ws.receive_json(timeout=5) == error_frame(frame, "unknown recipient nobody")


async def test_an_oversized_frame_closes_the_socket_with_1009(start_master: MasterFactory) -> None:
    master = await start_master(max_ciphertext_bytes=1024)
    ws = await connect(master, await register(master, "alice"))
    await ws.send_json(send_frame("alice", ciphertext=b64(64 * 1024)))
    closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_a_ciphertext_over_the_limit_in_a_frame_under_it_is_an_error(
    start_master: MasterFactory,
) -> None:
    master = await start_master(max_ciphertext_bytes=1024)
    ws = await connect(master, await register(master, "alice"))
    frame = send_frame("alice", ciphertext=b64(1025))
    await ws.send_json(frame)
    error = await ws.receive_json(timeout=5)
    assert (error["type"], error["id"]) == ("error", frame["id"])
    assert "over 1024 bytes" in error["reason"]


async def test_sends_over_the_per_connection_rate_get_an_error_frame(
    start_master: MasterFactory,
) -> None:
    master = await start_master(send_burst=3, send_per_second=0.01)
    alice = await register(master, "alice")
    ws = await connect(master, alice)
    frames = [send_frame("alice") for _ in range(5)]
    for frame in frames:
        await ws.send_json(frame)
    replies = {}
    while len(replies) < 5 + 3:  # three messages pushed to alice herself, five replies
        reply = await ws.receive_json(timeout=5)
        replies[(reply["type"], reply["id"])] = reply
    kinds = {frame["id"]: replies.get(("ack", frame["id"])) is not None for frame in frames}
    assert list(kinds.values()) == [True, True, True, False, False]
    assert replies[("error", frames[4]["id"])]["reason"] == "too many messages; resend later"
    # Another connection has its own budget.
    other = await connect(master, alice)
    await other.send_json(send_frame("alice"))
    assert {(await other.receive_json(timeout=5))["type"] for _ in range(2)} == {"message", "ack"}


async def test_the_token_may_come_as_the_first_frame(master: TestClient) -> None:
    token = await register(master, "alice")
    ws = await master.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token})
    assert await ws.receive_json(timeout=5) == {"type": "ready", "user": "alice"}


async def test_no_token_in_time_closes_the_socket(start_master: MasterFactory) -> None:
    master = await start_master(auth_timeout=0.2)
    ws = await master.ws_connect("/ws")
    error = await ws.receive_json(timeout=5)
    assert error["type"] == "error"
    assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_a_bad_authorization_header_is_401_before_the_upgrade(master: TestClient) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await master.ws_connect("/ws", headers=bearer("not.a.token"))
    assert refused.value.status == 401


async def test_with_couchdb_down_a_new_recipient_is_an_error_frame_and_known_ones_still_work(
    aiohttp_client: Any, make_master_settings: Any, private_couchdb: Any
) -> None:
    settings = make_master_settings(couchdb_urls=[private_couchdb.url], couchdb_timeout=1.0)
    master = await aiohttp_client(create_app(settings))
    alice = await register(master, "alice")
    await register(master, "bob")
    ws = await connect(master, alice)
    private_couchdb.stop()
    frame = send_frame("carol")
    await ws.send_json(frame)
    assert await ws.receive_json(timeout=10) == error_frame(
        frame, "the account store is unreachable; resend later"
    )
    frame = send_frame("bob")
    await ws.send_json(frame)
    assert (await ws.receive_json(timeout=10))["type"] == "ack"
