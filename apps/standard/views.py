"""The standard node's HTTP API (see DESIGN.md, "HTTP contracts")."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from kuno.common import couch, replications
from kuno.common.messages import Message, canonical_uuid, from_document
from kuno.common.web import PayloadTooLarge, authenticate, fail, read_json_object
from kuno.standard import keys, validation
from kuno.standard.mesh import health_links, links_failing
from kuno.standard.store import QUEUE_FULL, Cursor
from kuno.standard.validation import query_int, query_value

routes = web.RouteTableDef()


class InsufficientStorage(web.HTTPError):
    """507: the recipient's queue is at its bound (RFC 4918 §11.5)."""

    status_code = 507


def now_ms() -> int:
    return int(time.time() * 1000)


@routes.post("/messages")
async def store_message(request: web.Request) -> web.Response:
    """One message, in the same CouchDB write as others stored meanwhile: 201 stored, 200
    already stored, 507 `queue_full` when its recipient's queue is at a bound."""
    settings = request.app[keys.SETTINGS]
    _require_master(request)
    body = await read_json_object(request, settings.max_message_body)
    message = _validate(body, settings.max_ciphertext_bytes)
    result = await request.app[keys.STORE].store_one(message)
    if result.error == QUEUE_FULL:
        fail(InsufficientStorage, QUEUE_FULL, result.reason or "the recipient's queue is full")
    if result.error is not None:
        raise couch.CouchError(502, result.error, "CouchDB refused the message")
    return web.json_response(result.as_json(), status=201 if result.created else 200)


@routes.post("/messages/batch")
async def store_messages(request: web.Request) -> web.Response:
    """`{"messages": [...]}` in one CouchDB write; every message is checked first and one
    bad message refuses the whole batch (400/413, nothing stored). 200 with one result per
    message, in order: `{"id", "stored": true, "created": bool}`, or
    `{"id", "stored": false, "error"}` when CouchDB refused that document, or `{"id",
    "stored": false, "error": "queue_full", "reason"}` when its recipient's queue is at a
    bound."""
    settings = request.app[keys.SETTINGS]
    _require_master(request)
    body = await read_json_object(request, settings.max_batch_body)
    items = body.get("messages")
    if set(body) != {"messages"} or not isinstance(items, list) or not items:
        fail(web.HTTPBadRequest, "invalid_batch", 'the body must be {"messages": [...]}, not empty')
    if len(items) > settings.max_batch_messages:
        fail(PayloadTooLarge, "too_large", f"over {settings.max_batch_messages} messages")
    messages = [
        _validate(item, settings.max_ciphertext_bytes, f"messages[{index}]")
        for index, item in enumerate(items)
    ]
    if len({message.id for message in messages}) != len(messages):
        fail(web.HTTPBadRequest, "invalid_batch", "a message id appears twice")
    results = await request.app[keys.STORE].store(messages)
    return web.json_response({"results": [result.as_json() for result in results]})


def _require_master(request: web.Request) -> None:
    if not authenticate(request, request.app[keys.VERIFIER]).is_master:
        fail(web.HTTPForbidden, "forbidden", "only the master stores messages")


def _validate(body: object, max_ciphertext_bytes: int, where: str = "") -> Message:
    """The message, or 400 (invalid) / 413 (ciphertext over the cap) naming the problem."""
    prefix = f"{where}: " if where else ""
    if not isinstance(body, dict):
        fail(web.HTTPBadRequest, "invalid_message", f"{prefix}a message is a JSON object")
    try:
        message = Message.model_validate(body)
    except ValidationError as exc:
        fail(web.HTTPBadRequest, "invalid_message", prefix + _first_problem(exc))
    for field in ("senderId", "recipientId"):
        try:
            validation.user_id(getattr(message, field))
        except ValueError as exc:
            fail(web.HTTPBadRequest, "invalid_message", f"{prefix}{field}: {exc}")
    if message.ciphertext_bytes > max_ciphertext_bytes:
        fail(PayloadTooLarge, "too_large", f"{prefix}ciphertext over {max_ciphertext_bytes} bytes")
    return message


@routes.get("/messages/{user_id}")
async def list_messages(request: web.Request) -> web.Response:
    """`?limit=` 1..max_page_limit (default page_limit), `?after=` a `next` cursor: 200
    `{"messages": [...], "next": cursor | None}`; 400 for a bad user id, limit or cursor."""
    identity = authenticate(request, request.app[keys.VERIFIER])
    user_id = _path_user_id(request)
    if identity.subject != user_id and not identity.is_master:
        fail(web.HTTPForbidden, "forbidden", "these are another user's messages")
    settings = request.app[keys.SETTINGS]
    limit = query_int(request, "limit", settings.page_limit, 1, settings.max_page_limit)
    after = None
    if (cursor := query_value(request, "after")) is not None:
        try:
            after = Cursor.decode(cursor)
        except ValueError:
            fail(web.HTTPBadRequest, "invalid_cursor", "after must be a cursor from `next`")
    page = await request.app[keys.STORE].page(user_id, now_ms(), limit, after)
    return web.json_response(
        {
            "messages": [from_document(doc) for doc in page.messages],
            "next": page.next.encode() if page.next else None,
        }
    )


@routes.delete("/messages/{message_id}")
async def delete_message(request: web.Request) -> web.Response:
    """Delete every revision of the caller's message: 200 `{"id", "deleted": true}`; 400
    for an id that is no canonical UUID, 403 another's, 404 absent, 409 kept changing."""
    identity = authenticate(request, request.app[keys.VERIFIER])
    message_id = request.match_info["message_id"]
    try:
        canonical_uuid(message_id)
    except ValueError as exc:
        fail(web.HTTPBadRequest, "invalid_id", str(exc))
    store = request.app[keys.STORE]
    for _attempt in range(3):
        leaves = await store.live_leaves(message_id)
        if not leaves:
            fail(web.HTTPNotFound, "not_found", "no such message")
        # Every leaf must be the caller's: a conflicting revision is a message too.
        if not identity.is_master and any(
            leaf.get("recipientId") != identity.subject for leaf in leaves
        ):
            fail(web.HTTPForbidden, "forbidden", "only the recipient deletes a message")
        try:
            await store.delete(leaves)
        except couch.Conflict:
            continue  # a revision arrived meanwhile (replication): read the leaves again
        return web.json_response({"id": message_id, "deleted": True})
    fail(web.HTTPConflict, "conflict", "the message kept changing; try again")


@routes.post("/messages/delete")
async def delete_messages(request: web.Request) -> web.Response:
    """`{"ids": [...]}` (1..max_page_limit canonical UUIDs): every revision of each of the
    caller's messages, in one CouchDB write. 200 `{"results": [{"id", "deleted": true} |
    {"id", "deleted": false, "error": "not_found" | "forbidden" | "conflict"}]}`, one per
    distinct id in order; 400 for a bad body or id, 413 over the limit."""
    identity = authenticate(request, request.app[keys.VERIFIER])
    settings = request.app[keys.SETTINGS]
    body = await read_json_object(request, settings.max_page_limit * 64 + 1024)
    ids = body.get("ids")
    if set(body) != {"ids"} or not isinstance(ids, list) or not ids:
        fail(web.HTTPBadRequest, "invalid_batch", 'the body must be {"ids": [...]}, not empty')
    if len(ids) > settings.max_page_limit:
        fail(PayloadTooLarge, "too_large", f"over {settings.max_page_limit} ids")
    for index, message_id in enumerate(ids):
        try:
            canonical_uuid(message_id if isinstance(message_id, str) else "")
        except ValueError as exc:
            fail(web.HTTPBadRequest, "invalid_id", f"ids[{index}]: {exc}")
    recipient = None if identity.is_master else identity.subject
    outcome = await request.app[keys.STORE].delete_many(ids, recipient)
    results = [
        {"id": message_id, "deleted": True}
        if outcome[message_id] == "deleted"
        else {"id": message_id, "deleted": False, "error": outcome[message_id]}
        for message_id in dict.fromkeys(ids)
    ]
    return web.json_response({"results": results})


def _path_user_id(request: web.Request) -> str:
    """The `{user_id}` of the path, percent-decoded, or 400 `invalid_user_id`."""
    value = request.match_info["user_id"]
    try:
        return validation.user_id(value)
    except ValueError as exc:
        fail(web.HTTPBadRequest, "invalid_user_id", f"the user id {exc}")


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """200 `{"node", "status": "ok" | "degraded", "couchdb", "replications", "links",
    "mesh"}`; 503 with `"status": "down"` when CouchDB is unreachable, or `"not_ready"` and
    `"missing"` while the schema is incomplete. `degraded`: a
    replication fails, or one of this node's expected links (KUNO_PEERS x
    KUNO_REPLICATED_DATABASES) is missing, failing or stalled; `links` names them."""
    report, status = await _health_report(request)
    return web.json_response(report, status=status)


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    """/health without the details, for the public (the proxy's `/nodeN/health`):
    `{"node", "status"}` with /health's status code."""
    report, status = await _health_report(request)
    return web.json_response({"node": report["node"], "status": report["status"]}, status=status)


async def _health_report(request: web.Request) -> tuple[dict[str, Any], int]:
    """/health's body and status code."""
    settings = request.app[keys.SETTINGS]
    client = request.app[keys.COUCH]
    store = request.app[keys.STORE]
    mesh = request.app[keys.MESH]
    try:
        info = await client.server_info()
        replication_list = await couch.replication_states(client)
        # Checked again only until it was complete once: the deployment owns the schema.
        missing = store.missing if store.missing == [] else await store.check_schema()
    except couch.CouchError as exc:
        return {
            "node": settings.node_name,
            "status": "down",
            "couchdb": {"reachable": False, "reason": exc.error},
            "replications": [],
        }, 503
    if missing:
        return {
            "node": settings.node_name,
            "status": "not_ready",
            "couchdb": {"reachable": True, "flavour": couch.flavour(info)},
            "missing": missing,
            "replications": replication_list,
        }, 503
    # One reading of states for /health, the Ansible modules and the tests; only the state is
    # read here, so a job that waits (pending) is not degraded, nor one still settling.
    healthy = not any(replications.is_failed(r["state"]) for r in replication_list)
    await mesh.look()
    links = health_links(mesh)
    healthy = healthy and not links_failing(mesh)
    databases = len(settings.replicated_databases)
    return {
        "node": settings.node_name,
        "status": "ok" if healthy else "degraded",
        "couchdb": {"reachable": True, "flavour": couch.flavour(info)},
        "replications": replication_list,
        "links": links,
        "mesh": {
            "nodes": mesh.nodes,
            # Over the whole mesh; this node answers for the links into it.
            "links_expected": mesh.nodes * (mesh.nodes - 1) * databases,
            "complete": links["running"] == links["expected"],
        },
    }, 200


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
