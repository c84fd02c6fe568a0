"""Bad input on every master route and frame type: a 4xx JSON error or an error frame,
never a 5xx, never an HTTP response inside a WebSocket, nothing stored (issue 17, 3-4).

Named regressions first, then property-based tests (hypothesis, bounded for CI).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kuno.common.web import HttpMetrics, make_error_middleware
from kuno.master.app import create_app
from tests.e2e.cluster import RunningApp
from tests.master.conftest import PASSWORD, MasterFactory, bearer, register
from tests.master.test_websocket import b64, connect, send_frame
from tests.support.pouchdb import PouchServer, http_json

DEEP = 1_000

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    # One master and its servers serve every example of a test: that is the point.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def property_of(**strategies: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A hypothesis property test with the PROPERTY settings, its arguments drawn from
    `strategies`."""

    def decorate(test: Callable[..., Any]) -> Callable[..., Any]:
        return PROPERTY(given(**strategies)(test))

    return decorate


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def assert_json_error(response: aiohttp.ClientResponse, status: int | None = None) -> Any:
    """A 4xx whose body is the contract's {"error", "reason"}."""
    text = await response.text()
    assert 400 <= response.status < 500, (response.status, text)
    if status is not None:
        assert response.status == status, text
    assert response.content_type == "application/json", text
    body = json.loads(text)
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("reason"), str), body
    return body


@pytest.fixture
async def master(start_master: MasterFactory, node: RunningApp) -> TestClient:
    """A master storing on one real node, with rate limits out of the tests' way."""
    return await start_master(
        storage_enabled=True,
        standard_node_urls=[node.url],
        client_burst=100_000,
        login_burst=100_000,
        send_burst=100_000,
        send_per_second=100_000.0,
        auth_timeout=2.0,
    )


def stored_messages(couchdb: PouchServer, database: str) -> int:
    status, info = http_json("GET", couchdb.db_url(database))
    assert status == 200, info
    return int(info["doc_count"])


def accounts(couchdb: PouchServer, database: str) -> int:
    status, info = http_json("GET", couchdb.db_url(f"users_{database}"))
    assert status == 200, info
    return int(info["doc_count"])


# --- named regressions: HTTP ---------------------------------------------------------


@pytest.mark.parametrize("route", ["/api/register", "/api/login"])
@pytest.mark.parametrize("charset", ["x", "latin-1", "utf-16"])
async def test_a_charset_other_than_utf8_is_415(
    master: TestClient, route: str, charset: str
) -> None:
    body = json.dumps({"username": "alice", "password": PASSWORD, "publicKey": b64(32)})
    headers = {"Content-Type": f"application/json; charset={charset}"}
    response = await master.post(route, data=body.encode(), headers=headers)
    error = await assert_json_error(response, 415)
    assert "UTF-8" in error["reason"]


@pytest.mark.parametrize("route", ["/api/register", "/api/login"])
@pytest.mark.parametrize(
    "content_type",
    # Parameters the stdlib's email parser (aiohttp's Content-Type parser) raises on.
    [
        "application/json;0*",
        "application/json; charset*",
        "application/json;charset=utf-8;0*",
        "application/json; name*0*",
    ],
)
async def test_a_malformed_content_type_is_415(
    master: TestClient, couchdb: PouchServer, database: str, route: str, content_type: str
) -> None:
    body = json.dumps({"username": "alice", "password": PASSWORD, "publicKey": b64(32)})
    response = await master.post(route, data=body.encode(), headers={"Content-Type": content_type})
    error = await assert_json_error(response, 415)
    assert error["error"] == "unsupported_media_type"
    assert accounts(couchdb, database) == 0


async def test_charset_utf8_is_accepted(master: TestClient) -> None:
    body = {"username": "alice", "password": PASSWORD, "publicKey": b64(32)}
    headers = {"Content-Type": "application/json; charset=UTF-8"}
    response = await master.post("/api/register", data=json.dumps(body), headers=headers)
    assert response.status == 201, await response.text()


@pytest.mark.parametrize("route", ["/api/register", "/api/login"])
@pytest.mark.parametrize("body", [nested(DEEP), nested_object(DEEP), nested(10_000)])
async def test_json_nested_1000_deep_is_400(master: TestClient, route: str, body: str) -> None:
    response = await master.post(
        route, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    error = await assert_json_error(response, 400)
    assert error == {"error": "invalid_json", "reason": "the body is nested too deeply"}


@pytest.mark.parametrize("route", ["/api/register", "/api/login"])
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"username": "\xff\xfe"}', "the body is not valid UTF-8"),
        (b"\xef\xbb\xbf{}", "the body is not JSON"),  # a BOM
        (b'{"username": ' + b"9" * 5_000 + b"}", "the body is not JSON"),  # digit limit
        (b"", "the body is not JSON"),
    ],
)
async def test_a_body_that_is_not_json_is_400_naming_the_problem(
    master: TestClient, route: str, body: bytes, reason: str
) -> None:
    response = await master.post(route, data=body, headers={"Content-Type": "application/json"})
    assert (await assert_json_error(response, 400))["reason"] == reason


async def test_a_response_that_started_is_never_followed_by_an_error_response(
    aiohttp_client: Any,
) -> None:
    """The middleware lets a failure after prepare() drop the connection instead."""
    from prometheus_client import CollectorRegistry

    async def fails_after_upgrade(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        raise RuntimeError("a bug after the upgrade")

    app = web.Application(middlewares=[make_error_middleware(HttpMetrics(CollectorRegistry()))])
    app.router.add_get("/ws", fails_after_upgrade)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws")
    message = await ws.receive(timeout=5)
    # Before the fix: an HTTP/1.1 500 inside the stream, which the client reads as a
    # protocol error (1002).
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    assert ws.close_code != WSCloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("name", ["%FF", "%00", "a%2Fb", "%25", "x" * 5_000, "%C0%AF"])
async def test_a_key_lookup_for_any_encoded_name_is_a_json_answer(
    master: TestClient, alice_token: str, name: str
) -> None:
    response = await master.get(f"/api/users/{name}/key", headers=bearer(alice_token))
    await assert_json_error(response)


# --- named regressions: WebSocket ------------------------------------------------------


@pytest.mark.parametrize("text", [nested(DEEP), nested_object(DEEP), nested(10_000)])
async def test_a_frame_nested_1000_deep_gets_an_error_frame_and_the_socket_stays(
    master: TestClient, text: str
) -> None:
    alice = await register(master, "alice")
    ws = await connect(master, alice)
    await ws.send_str(text)
    assert await ws.receive_json(timeout=5) == {
        "type": "error",
        "id": None,
        "reason": "the frame is nested too deeply",
    }
    frame = send_frame("alice")
    await ws.send_json(frame)
    replies = {(await ws.receive_json(timeout=5))["type"] for _ in range(2)}
    assert replies == {"message", "ack"}


async def test_an_auth_frame_nested_1000_deep_is_refused_with_1008(master: TestClient) -> None:
    ws = await master.ws_connect("/ws")
    await ws.send_str(nested_object(DEEP))
    error = await ws.receive_json(timeout=5)
    assert (error["type"], error["id"]) == ("error", None)
    assert (await ws.receive(timeout=5)).type == WSMsgType.CLOSE
    assert ws.close_code == WSCloseCode.POLICY_VIOLATION


async def test_a_text_frame_that_is_not_utf8_closes_with_1007(master: TestClient) -> None:
    ws = await connect(master, await register(master, "alice"))
    await ws.send_frame(b'{"type":"send","to":"\xff"}', WSMsgType.TEXT)
    assert (await ws.receive(timeout=5)).type == WSMsgType.CLOSE
    assert ws.close_code == WSCloseCode.INVALID_TEXT


# --- properties: HTTP routes -----------------------------------------------------------

names = st.text(max_size=70)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
account_fields = st.fixed_dictionaries(
    {},
    optional={
        "username": names | json_values,
        "password": st.text(max_size=40) | json_values,
        "publicKey": st.sampled_from([b64(32), b64(31), b64(33), "***"]) | json_values,
    },
)
bodies = st.one_of(
    account_fields.map(lambda body: json.dumps(body).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.integers(1, 3_000).map(lambda depth: nested(depth).encode()),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", ""]
) | header_text.map(lambda params: "application/json;" + params)


@pytest.mark.parametrize("route", ["/api/register", "/api/login"])
@property_of(body=bodies, content_type=content_types)
async def test_property_account_routes_answer_bad_bodies_with_a_4xx_json_error(
    master: TestClient,
    couchdb: PouchServer,
    database: str,
    route: str,
    body: bytes,
    content_type: str,
) -> None:
    before = accounts(couchdb, database)
    response = await master.post(route, data=body, headers={"Content-Type": content_type})
    if response.status < 400:
        assert response.status in (200, 201), await response.text()
        return
    await assert_json_error(response)
    assert accounts(couchdb, database) == before


@pytest.fixture
async def alice_token(master: TestClient) -> str:
    return await register(master, "alice")


@property_of(name=names, authorization=st.none() | header_text)
async def test_property_key_lookup_answers_any_name_with_a_json_answer(
    master: TestClient, alice_token: str, name: str, authorization: str | None
) -> None:
    headers = bearer(alice_token) if authorization is None else {"Authorization": authorization}
    response = await master.get(f"/api/users/{quote(name, safe='')}/key", headers=headers)
    if response.status == 200:
        assert set(await response.json()) >= {"username", "publicKey"}
    else:
        await assert_json_error(response)


# --- properties: WebSocket frames ------------------------------------------------------

uuids = st.uuids().map(str)
send_frames = st.fixed_dictionaries(
    {"type": st.just("send")},
    optional={
        "id": uuids | uuids.map(str.upper) | st.text(max_size=40) | json_values,
        "to": st.sampled_from(["alice", "bob", "nobody"]) | names | json_values,
        "ciphertext": st.sampled_from([b64(40), "", "***", b64(1)]) | json_values,
        "nonce": st.sampled_from([b64(24), b64(65), "="]) | json_values,
        "extra": json_values,
    },
)
received_frames = st.fixed_dictionaries(
    {"type": st.just("received")},
    optional={"id": uuids | st.text(max_size=40) | json_values, "extra": json_values},
)
unknown_frames = json_values.filter(
    lambda value: not (isinstance(value, dict) and value.get("type") in ("send", "received"))
)
auth_frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("auth")}, optional={"token": st.text(max_size=60) | json_values}
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=100),
    st.integers(1, 3_000).map(nested),
)


async def answer_to(ws: aiohttp.ClientWebSocketResponse, frame: Any) -> dict[str, Any]:
    """The ack or error frame that answers `frame` (its id, or null when it had none)."""
    has_id = isinstance(frame, dict) and isinstance(frame.get("id"), str)
    expected = frame["id"] if has_id else None
    while True:
        reply = await ws.receive_json(timeout=10)
        if reply["type"] in ("ack", "error") and reply["id"] == expected:
            return reply


async def assert_still_open(ws: aiohttp.ClientWebSocketResponse) -> None:
    """A marker frame gets its error frame: the socket is open and answers in order."""
    marker = {"type": "marker", "id": str(uuid.uuid4())}
    await ws.send_json(marker)
    assert (await answer_to(ws, marker))["reason"] == "type must be send, received or refresh"


@pytest.fixture
async def alice_socket(master: TestClient, alice_token: str) -> aiohttp.ClientWebSocketResponse:
    await register(master, "bob")
    return await connect(master, alice_token)


@property_of(frame=send_frames)
async def test_property_a_refused_send_gets_an_error_frame_and_is_not_stored(
    alice_socket: aiohttp.ClientWebSocketResponse, couchdb: PouchServer, database: str, frame: Any
) -> None:
    before = stored_messages(couchdb, database)
    await alice_socket.send_str(json.dumps(frame))
    answer = await answer_to(alice_socket, frame)
    if answer["type"] == "error":
        assert isinstance(answer["reason"], str) and answer["reason"]
        assert stored_messages(couchdb, database) == before
    else:
        assert answer["stored"] == 1
    await assert_still_open(alice_socket)


@property_of(frame=received_frames)
async def test_property_a_received_frame_gets_an_error_frame_or_nothing(
    alice_socket: aiohttp.ClientWebSocketResponse, frame: Any
) -> None:
    await alice_socket.send_str(json.dumps(frame))
    marker = {"type": "marker", "id": str(uuid.uuid4())}
    await alice_socket.send_json(marker)
    replies = []
    while (reply := await alice_socket.receive_json(timeout=10))["id"] != marker["id"]:
        replies.append(reply)
    valid = isinstance(frame.get("id"), str) and set(frame) == {"type", "id"}
    assert all(reply["type"] == "error" and reply["reason"] for reply in replies)
    if not valid:
        assert replies, "an invalid received frame got no error frame"


@property_of(frame=unknown_frames)
async def test_property_an_unknown_frame_gets_an_error_frame(
    alice_socket: aiohttp.ClientWebSocketResponse, frame: Any
) -> None:
    await alice_socket.send_str(json.dumps(frame))
    answer = await answer_to(alice_socket, frame)
    assert answer["type"] == "error" and answer["reason"]
    await assert_still_open(alice_socket)


@property_of(data=st.binary(max_size=300), as_text=st.booleans())
async def test_property_any_bytes_get_an_error_frame_or_a_documented_close(
    master: TestClient, alice_token: str, data: bytes, as_text: bool
) -> None:
    ws = await connect(master, alice_token)
    await ws.send_frame(data, WSMsgType.TEXT if as_text else WSMsgType.BINARY)
    message = await ws.receive(timeout=10)
    if message.type == WSMsgType.CLOSE:
        # Only text that is not UTF-8 may close the socket, and only with 1007.
        assert as_text
        assert ws.close_code == WSCloseCode.INVALID_TEXT
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        return
    assert message.type == WSMsgType.TEXT, message
    reply = json.loads(message.data)
    assert reply["type"] == "error" and reply["reason"]
    await assert_still_open(ws)
    await ws.close()


@property_of(text=auth_frames)
async def test_property_a_bad_auth_frame_gets_an_error_frame_then_1008(
    master: TestClient, text: str
) -> None:
    ws = await master.ws_connect("/ws")
    await ws.send_str(text)
    reply = await ws.receive(timeout=10)
    assert reply.type == WSMsgType.TEXT, reply
    error = json.loads(reply.data)
    assert error["type"] == "error" and error["reason"]
    assert (await ws.receive(timeout=10)).type == WSMsgType.CLOSE
    assert ws.close_code == WSCloseCode.POLICY_VIOLATION
    await ws.close()


async def test_a_body_cut_short_is_not_logged_as_a_server_fault(
    make_master_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A client gone mid-body was an "unhandled error" and a 500."""
    caplog.set_level(logging.INFO, logger="kuno.http")
    master = await RunningApp().start(create_app(make_master_settings()))
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", master.port)
        writer.write(
            b"POST /api/register HTTP/1.1\r\nHost: kuno\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"username":'
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()  # the client goes away mid-body
        for _ in range(50):
            await asyncio.sleep(0.1)
            if any(r.getMessage() == "request" for r in caplog.records):
                break
    finally:
        await master.stop()
    faults = [r for r in caplog.records if r.name == "kuno.http" and r.levelno >= logging.ERROR]
    assert faults == []
    requests = [r for r in caplog.records if r.getMessage() == "request"]
    assert [r.status for r in requests] == [400]  # type: ignore[attr-defined]
