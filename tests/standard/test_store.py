"""POST /messages: idempotent, byte-identical, validated, master only."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import pytest

from kuno.common.messages import Message
from kuno.common.tokens import STORE_SCOPE, TokenSigner, generate_key_pair, load_private_key
from tests.standard.conftest import bearer
from tests.support.messages import DAY_MS, message_body, now_ms
from tests.support.pouchdb import http_json


async def test_a_new_message_is_stored_as_exactly_the_body_given(
    node, couchdb, database, master_token
):
    body = message_body(seq=now_ms() * 1000 + 7)  # the master's order of acceptance
    response = await node.post("/messages", json=body, headers=bearer(master_token))
    assert response.status == 201
    assert await response.json() == {"id": body["id"], "stored": True, "created": True}

    status, doc = http_json("GET", f"{couchdb.db_url(database)}/{body['id']}")
    assert status == 200
    doc.pop("_rev")
    expected = {"_id": body.pop("id"), "type": "message", **body}
    assert doc == expected


async def test_storing_the_same_message_again_is_a_success_not_a_conflict(
    node, couchdb, database, master_token
):
    body = message_body()
    first = await node.post("/messages", json=body, headers=bearer(master_token))
    second = await node.post("/messages", json=body, headers=bearer(master_token))
    assert (first.status, second.status) == (201, 200)
    assert (await second.json())["created"] is False
    assert couchdb.all_ids(database) == {body["id"]}


async def test_every_node_gets_the_same_revision_so_replication_finds_no_conflict(
    start_node, couchdb_cluster, database, master_token
):
    body = message_body()
    revisions = set()
    for server in couchdb_cluster:
        node = await start_node(server)
        response = await node.post("/messages", json=body, headers=bearer(master_token))
        assert response.status == 201
        _, doc = http_json("GET", f"{server.db_url(database)}/{body['id']}")
        revisions.add(doc["_rev"])
    assert len(revisions) == 1


async def test_a_message_stored_again_after_its_delete_stays_deleted(
    node, couchdb, database, master_token
):
    body = message_body()
    await node.post("/messages", json=body, headers=bearer(master_token))
    deleted = await node.delete(f"/messages/{body['id']}", headers=bearer(master_token))
    assert deleted.status == 200

    again = await node.post("/messages", json=body, headers=bearer(master_token))
    assert again.status == 200
    status, _ = http_json("GET", f"{couchdb.db_url(database)}/{body['id']}")
    assert status == 404
    listed = await node.get(f"/messages/{body['recipientId']}", headers=bearer(master_token))
    assert (await listed.json())["messages"] == []


def _bad(**changes):
    body = message_body()
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(_bad(id="not-a-uuid"), "UUID", id="id-not-uuid"),
        pytest.param(
            _bad(id="3F2504E0-4F89-11D3-9A0C-0305E82C3301"), "canonical", id="id-uppercase"
        ),
        pytest.param(_bad(id=12), "id", id="id-number"),
        pytest.param(_bad(recipientId="bob smith"), "recipientId", id="recipient-space"),
        pytest.param(_bad(senderId=...), "senderId", id="sender-missing"),
        pytest.param(_bad(ciphertext="***"), "base64", id="ciphertext-not-base64"),
        pytest.param(_bad(nonce=""), "nonce", id="nonce-empty"),
        pytest.param(
            _bad(nonce=base64.b64encode(b"n" * 65).decode()), "nonce", id="nonce-too-long"
        ),
        pytest.param(_bad(timestamp="1700000000000"), "timestamp", id="timestamp-string"),
        pytest.param(_bad(timestamp=True), "timestamp", id="timestamp-bool"),
        pytest.param(_bad(expiresAt=...), "expiresAt", id="expiry-missing"),
        pytest.param(
            _bad(timestamp=1_000, expiresAt=1_000 + 31 * DAY_MS), "30 days", id="expiry-too-late"
        ),
        pytest.param(_bad(timestamp=1_000, expiresAt=1_000), "expiresAt", id="expiry-not-after"),
        pytest.param(_bad(type="note"), "type", id="wrong-type"),
        pytest.param(_bad(admin=True), "admin", id="unknown-field"),
        pytest.param(_bad(_rev="1-abc"), "_rev", id="couchdb-field"),
    ],
)
async def test_an_invalid_message_is_refused_with_400_and_nothing_is_stored(
    node, couchdb, database, master_token, body, fragment
):
    response = await node.post("/messages", json=body, headers=bearer(master_token))
    assert response.status == 400
    error = await response.json()
    assert error["error"] == "invalid_message"
    assert fragment in error["reason"]
    assert couchdb.all_ids(database) == set()


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"", "application/json", 400),
        (json.dumps(message_body()).encode(), "text/plain", 415),
    ],
    ids=["malformed", "array", "empty", "wrong-content-type"],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    node, couchdb, database, master_token, data, content_type, status
):
    headers = {**bearer(master_token), "Content-Type": content_type}
    response = await node.post("/messages", data=data, headers=headers)
    assert response.status == status
    assert set(await response.json()) == {"error", "reason"}
    assert couchdb.all_ids(database) == set()


# Parameters the stdlib's email parser (aiohttp's Content-Type parser) raises on.
MALFORMED_CONTENT_TYPES = [
    "application/json;0*",
    "application/json; charset*",
    "application/json;charset=utf-8;0*",
    "application/json; name*0*",
]


@pytest.mark.parametrize("route", ["/messages", "/messages/batch"])
@pytest.mark.parametrize("content_type", MALFORMED_CONTENT_TYPES)
async def test_a_malformed_content_type_is_a_415_json_error(
    node, couchdb, database, master_token, route, content_type
):
    headers = {**bearer(master_token), "Content-Type": content_type}
    body = message_body() if route == "/messages" else {"messages": [message_body()]}
    response = await node.post(route, data=json.dumps(body).encode(), headers=headers)
    assert response.status == 415, await response.text()
    assert (await response.json())["error"] == "unsupported_media_type"
    assert couchdb.all_ids(database) == set()


async def test_a_ciphertext_over_the_configured_cap_is_refused_with_413(
    start_node, couchdb, database, master_token
):
    node = await start_node(couchdb, max_ciphertext_bytes=1024)
    at_cap = message_body(ciphertext=base64.b64encode(b"c" * 1024).decode())
    over_cap = message_body(ciphertext=base64.b64encode(b"c" * 1025).decode())
    huge = message_body(ciphertext=base64.b64encode(b"c" * 64 * 1024).decode())

    assert (await node.post("/messages", json=at_cap, headers=bearer(master_token))).status == 201
    over = await node.post("/messages", json=over_cap, headers=bearer(master_token))
    assert over.status == 413
    assert (await over.json())["error"] == "too_large"
    # Past the request size limit aiohttp refuses the body before it is parsed.
    refused = await node.post("/messages", json=huge, headers=bearer(master_token))
    assert refused.status == 413
    assert (await refused.json())["error"] == "too_large"
    assert couchdb.all_ids(database) == {at_cap["id"]}


async def test_a_chunked_body_over_the_route_limit_is_refused_with_413(
    start_node, couchdb, database, master_token
):
    # No Content-Length to refuse it by: the read stops at the single-message limit,
    # not at the app's (the batch route's) limit.
    node = await start_node(couchdb, max_ciphertext_bytes=1024, max_batch_bytes=1024 * 1024)
    padded = message_body() | {"padding": "x" * (64 * 1024)}

    async def chunks():
        encoded = json.dumps(padded).encode()
        for start in range(0, len(encoded), 4096):
            yield encoded[start : start + 4096]

    refused = await node.post(
        "/messages",
        data=chunks(),
        headers=bearer(master_token) | {"Content-Type": "application/json"},
    )
    assert refused.status == 413
    assert (await refused.json())["error"] == "too_large"
    assert couchdb.all_ids(database) == set()


async def test_the_default_cap_is_64_kib(node, master_token):
    at_cap = message_body(ciphertext=base64.b64encode(b"c" * 64 * 1024).decode())
    over_cap = message_body(ciphertext=base64.b64encode(b"c" * (64 * 1024 + 1)).decode())
    assert (await node.post("/messages", json=at_cap, headers=bearer(master_token))).status == 201
    assert (await node.post("/messages", json=over_cap, headers=bearer(master_token))).status == 413


async def test_only_the_master_stores(node, couchdb, database, signer, user_token):
    body = message_body()
    forger = TokenSigner(load_private_key(generate_key_pair()[0]), audience="kuno", ttl=60)
    cases = {
        "no token": ({}, 401),
        "not bearer": ({"Authorization": "Basic YTpi"}, 401),
        "garbage": (bearer("not.a.token"), 401),
        "forged": (bearer(forger.sign("master", scopes=(STORE_SCOPE,))), 401),
        "expired": (bearer(signer.sign("master", scopes=(STORE_SCOPE,), ttl=-60)), 401),
        "user token": (bearer(user_token("alice")), 403),
    }
    for name, (headers, status) in cases.items():
        response = await node.post("/messages", json=body, headers=headers)
        assert response.status == status, name
        assert (await response.json())["error"] in {"unauthorized", "forbidden"}, name
    assert couchdb.all_ids(database) == set()


async def test_a_token_for_another_audience_is_refused(node, key_pair):
    other = TokenSigner(load_private_key(key_pair[0]), audience="elsewhere", ttl=60)
    response = await node.post(
        "/messages",
        json=message_body(),
        headers=bearer(other.sign("master", scopes=(STORE_SCOPE,))),
    )
    assert response.status == 401


def test_the_document_has_no_node_specific_field():
    body = message_body()
    assert (
        Message.model_validate(body).to_document()
        == Message.model_validate(dict(body)).to_document()
    )
    assert set(Message.model_validate(body).to_document()) == {
        "_id",
        "type",
        "senderId",
        "recipientId",
        "ciphertext",
        "nonce",
        "timestamp",
        "expiresAt",
        "seq",
    }


async def test_concurrent_messages_share_couchdb_writes_and_each_gets_its_own_answer(
    node, couchdb, database, master_token
):
    bodies = [message_body() for _ in range(40)]
    responses = await asyncio.gather(
        *(node.post("/messages", json=body, headers=bearer(master_token)) for body in bodies)
    )
    answers = [await response.json() for response in responses]
    assert [response.status for response in responses] == [201] * 40
    assert [answer["id"] for answer in answers] == [body["id"] for body in bodies]
    assert couchdb.all_ids(database) == {body["id"] for body in bodies}
    metrics = await (await node.get("/metrics")).text()
    writes = float(re.search(r"^kuno_store_write_messages_count (\S+)$", metrics, re.M)[1])
    assert writes < 40  # coalesced: fewer CouchDB writes than messages
    assert "kuno_store_write_messages_sum 40.0" in metrics


async def test_the_same_message_sent_twice_at_once_is_stored_once(
    node, couchdb, database, master_token
):
    body = message_body()
    others = [message_body() for _ in range(5)]
    responses = await asyncio.gather(
        *(
            node.post("/messages", json=item, headers=bearer(master_token))
            for item in [*others, body, body]
        )
    )
    assert sorted(response.status for response in responses[-2:]) == [200, 201]
    _, doc = http_json("GET", f"{couchdb.db_url(database)}/{body['id']}")
    assert doc["_rev"].startswith("1-")
    assert couchdb.all_ids(database) == {item["id"] for item in [*others, body]}
