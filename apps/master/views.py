"""The master's HTTP API and its WebSocket (see DESIGN.md, "HTTP contracts")."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any, NoReturn

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from kuno.common.names import USERNAME_RULE, InvalidUsername, canonical_username
from kuno.common.protocol import (
    ROUTED_FRAMES,
    AuthFrame,
    ErrorFrame,
    FrameError,
    ReadyFrame,
    ReceivedFrame,
    RefreshedFrame,
    RefreshFrame,
    parse_frame,
    serialise,
)
from kuno.common.tokens import Identity, InvalidToken, TokenVerifier
from kuno.common.web import authenticate, fail, read_json_object
from kuno.master import keys
from kuno.master.ratelimit import TokenBucket
from kuno.master.routing import Connection, Router
from kuno.master.users import AccountConflict, NoMajority, User, decode_public_key, describe_user

log = logging.getLogger("kuno.master")

routes = web.RouteTableDef()

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# Headroom over the ciphertext's base64 for the frame's other fields.
FRAME_OVERHEAD = 4096


def _username(value: Any) -> str:
    """The name as typed, checked (kuno.common.names); 400 invalid_username otherwise."""
    try:
        canonical_username(value)
    except InvalidUsername:
        fail(web.HTTPBadRequest, "invalid_username", USERNAME_RULE)
    return str(value)


def _account_conflict(exc: AccountConflict) -> NoReturn:
    log.warning("account in conflict", extra={"username": exc.user_id})
    fail(
        web.HTTPConflict,
        "account_conflict",
        "this account has conflicting registrations; an operator must resolve it",
    )


def _password(body: dict[str, Any]) -> str:
    password = body.get("password")
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        fail(
            web.HTTPBadRequest,
            "invalid_password",
            f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters",
        )
    return password


def _limit(limiter_key: web.AppKey[Any], request: web.Request, key: str) -> None:
    wait = request.app[limiter_key].take(key)
    if wait:
        raise web.HTTPTooManyRequests(
            text=json.dumps({"error": "too_many_requests", "reason": "too many attempts"}),
            content_type="application/json",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def _client_address(request: web.Request) -> str:
    header = request.app[keys.SETTINGS].client_address_header
    if header:
        # The proxy's header; its last entry is the one the proxy itself added.
        forwarded = request.headers.get(header, "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.remote or "unknown"


@routes.post("/api/register")
async def register(request: web.Request) -> web.Response:
    _limit(keys.CLIENT_LIMITER, request, _client_address(request))
    body = await read_json_object(request)
    username = _username(body.get("username"))
    password = _password(body)
    public_key = body.get("publicKey")
    try:
        if not isinstance(public_key, str):
            raise ValueError("publicKey must be a base64 string")
        decode_public_key(public_key)
    except ValueError as exc:
        fail(web.HTTPBadRequest, "invalid_public_key", str(exc))
    try:
        created = await request.app[keys.USERS].create(username, password, public_key)
    except NoMajority as exc:
        log.warning("registration refused: no majority", extra={"cause": str(exc)})
        fail(
            web.HTTPServiceUnavailable,
            "no_majority",
            f"the account store cannot confirm the registration ({exc}); try again later",
        )
    if not created:
        fail(web.HTTPConflict, "username_taken", "this username is taken")
    user_id = canonical_username(username)
    log.info("registered", extra={"username": user_id})
    return web.json_response({"username": user_id, "publicKey": public_key}, status=201)


@routes.post("/api/login")
async def login(request: web.Request) -> web.Response:
    _limit(keys.CLIENT_LIMITER, request, _client_address(request))
    body = await read_json_object(request)
    username = _username(body.get("username"))
    password = body.get("password")
    # Per user id: attempts as "Alice" and "alice" share one limit.
    _limit(keys.LOGIN_LIMITER, request, canonical_username(username))
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        fail(web.HTTPUnauthorized, "invalid_credentials", "wrong username or password")
    try:
        user: User | None = await request.app[keys.USERS].check_password(username, password)
    except AccountConflict as exc:
        _account_conflict(exc)
    if user is None:
        log.info("login refused", extra={"username": canonical_username(username)})
        fail(web.HTTPUnauthorized, "invalid_credentials", "wrong username or password")
    settings = request.app[keys.SETTINGS]
    # The token's subject is the user id: the canonical name, whatever case was typed.
    token = request.app[keys.SIGNER].sign(user.user_id)
    return web.json_response(
        {"username": user.user_id, "token": token, "expiresIn": int(settings.token_ttl)}
    )


@routes.post("/api/refresh")
async def refresh(request: web.Request) -> web.Response:
    """A fresh token for a still-valid user token (`Authorization: Bearer`), so a client
    need not keep the password: 200 `{"username", "token", "expiresIn"}` (seconds), the
    same session's, living token_ttl but never past session_max_age from the login; 401
    `session_expired` then (log in again), 401 for a bad token, 403 for the master's."""
    identity = authenticate(request, request.app[keys.VERIFIER])
    if identity.is_master:
        fail(web.HTTPForbidden, "forbidden", "a user token is required")
    settings = request.app[keys.SETTINGS]
    ttl = min(settings.token_ttl, identity.auth_time + settings.session_max_age - time.time())
    if ttl < 1:
        fail(web.HTTPUnauthorized, "session_expired", "the session is over; log in again")
    signer = request.app[keys.SIGNER]
    token = signer.sign(identity.subject, ttl=ttl, auth_time=int(identity.auth_time))
    return web.json_response({"username": identity.subject, "token": token, "expiresIn": int(ttl)})


@routes.get("/api/users/{username}/key")
async def public_key(request: web.Request) -> web.Response:
    authenticate(request, request.app[keys.VERIFIER])
    username = _username(request.match_info["username"])
    try:
        user = await request.app[keys.USERS].get(username)
    except AccountConflict as exc:
        _account_conflict(exc)
    if user is None:
        fail(web.HTTPNotFound, "not_found", "no such user")
    return web.json_response(describe_user(user))


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    router = request.app[keys.ROUTER]
    couch_states, routing = await asyncio.gather(request.app[keys.USERS].health(), router.health())
    node_states = routing["standardNodes"]
    # A server without the schema's users database (the deployment's to create) is no help.
    couch_up = sum(state["reachable"] and "missing" not in state for state in couch_states)
    nodes_up = sum(state["reachable"] for state in node_states)
    if couch_up == 0 or (routing["storage"] == "enabled" and nodes_up == 0):
        status, code = "down", 503
    elif couch_up < len(couch_states) or nodes_up < len(node_states):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return web.json_response(
        {
            "status": status,
            "storage": routing["storage"],
            "couchdb": couch_states,
            "standardNodes": node_states,
            "websockets": routing["websockets"],
        },
        status=code,
    )


@routes.get("/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    """503 `too_many_websockets` (before the upgrade) when the master holds its
    KUNO_MAX_WEBSOCKETS; otherwise the socket, which holds its place until it closes."""
    with request.app[keys.SOCKET_LIMIT].hold():
        return await _websocket(request)


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    """The token comes in `Authorization: Bearer` or as the first frame, never in the URL."""
    settings = request.app[keys.SETTINGS]
    verifier = request.app[keys.VERIFIER]
    identity: Identity | None = None
    if "Authorization" in request.headers:
        identity = authenticate(request, verifier)  # 401 before the upgrade
    socket = web.WebSocketResponse(
        heartbeat=settings.heartbeat,
        compress=False,  # ciphertext does not compress
        max_msg_size=settings.max_ciphertext_bytes * 4 // 3 + FRAME_OVERHEAD,
        # Seconds a server-side close waits for the client's reply; during shutdown aiohttp
        # drops incoming data, so every 1001 close waits this long.
        timeout=1.0,
    )
    await socket.prepare(request)
    if identity is None:
        identity = await _first_frame_auth(socket, verifier, settings.auth_timeout)
        if identity is None:
            return socket
    if identity.is_master:
        await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=b"a user token is required")
        return socket
    router = request.app[keys.ROUTER]
    connection = Connection(
        identity.subject,
        socket,
        request.transport,
        write_timeout=router.delivery_timeout,
        close_grace=settings.heartbeat,
    )
    # Added first: a client told "ready" is one a message to it reaches.
    router.add(connection)
    connection.expire_at(identity.expires)
    sends = TokenBucket(settings.send_burst, settings.send_per_second)
    try:
        await connection.send(ReadyFrame(user=identity.subject))
        async for message in socket:
            if message.type == WSMsgType.ERROR:
                break  # aiohttp has closed the socket (1007 for text that is not UTF-8)
            await _on_frame(router, verifier, connection, sends, message)
    except Exception:
        # Whatever fails, never an HTTP response inside the upgraded stream.
        log.exception("websocket failed", extra={"user": identity.subject})
        await connection.close(WSCloseCode.INTERNAL_ERROR, b"internal error")
    finally:
        connection.cancel_expiry()
        router.remove(connection)
    if socket.close_code == WSCloseCode.MESSAGE_TOO_BIG:
        log.info("closed a socket: frame too large", extra={"user": identity.subject})
    return socket


async def _on_frame(
    router: Router,
    verifier: TokenVerifier,
    connection: Connection,
    sends: TokenBucket,
    message: aiohttp.WSMessage,
) -> None:
    """One frame from an authenticated client: refused with an error frame, or routed."""
    if message.type != WSMsgType.TEXT:
        await router.refuse(connection, FrameError("invalid_frame", "send text frames"))
        return
    try:
        frame = parse_frame(message.data, ROUTED_FRAMES)
    except FrameError as exc:
        await router.refuse(connection, exc)
        return
    if isinstance(frame, ReceivedFrame):
        router.on_received(connection, frame)
    elif isinstance(frame, RefreshFrame):
        await _refresh_socket(router, verifier, connection, frame)
    elif not sends.take():
        limited = FrameError("rate_limited", "too many messages; resend later", frame.id)
        await router.refuse(connection, limited)
    else:
        # The ack waits for the fan-out; the reader goes on with the next frame.
        router.spawn(router.answer_send(connection, frame))


async def _refresh_socket(
    router: Router, verifier: TokenVerifier, connection: Connection, frame: RefreshFrame
) -> None:
    """The socket lives until the fresher token expires; refused with an error frame (the
    old deadline kept) for a bad token or another user's."""
    try:
        identity = verifier.verify(frame.token)
    except InvalidToken:
        await router.refuse(
            connection, FrameError("invalid_token", "the token is invalid or expired")
        )
        return
    if identity.subject != connection.user or identity.is_master:
        await router.refuse(
            connection, FrameError("invalid_token", "the token is not this socket's user's")
        )
        return
    connection.expire_at(max(identity.expires, connection.expires))
    await connection.send(RefreshedFrame(expiresAt=int(connection.expires * 1000)))


async def _first_frame_auth(
    socket: web.WebSocketResponse, verifier: TokenVerifier, within: float
) -> Identity | None:
    """For clients that cannot set headers (browsers): {"type":"auth","token":...} first."""
    reason = 'the first frame must be {"type":"auth","token":...}'
    try:
        message = await socket.receive(timeout=within)
    except TimeoutError:
        message = None
    if message is not None and message.type == WSMsgType.TEXT:
        try:
            return verifier.verify(parse_frame(message.data, (AuthFrame,)).token)
        except FrameError as exc:
            if exc.frame_type == AuthFrame.frame_type():  # an auth frame without a token
                reason = "the token is invalid or expired"
        except InvalidToken:
            reason = "the token is invalid or expired"
    if not socket.closed:
        await socket.send_str(serialise(ErrorFrame(id=None, reason=reason)))
        await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode())
    return None
