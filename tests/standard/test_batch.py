"""POST /messages/batch: one CouchDB write, a result per message, all or nothing on bad input."""

from __future__ import annotations

import base64
import json

import pytest

from kuno.standard import keys
from tests.standard.conftest import bearer
from tests.support.messages import message_body
from tests.support.pouchdb import http_json


async def post_batch(node, token, messages, **kwargs):
    return await node.post(
        "/messages/batch", json={"messages": messages}, headers=bearer(token), **kwargs
    )


async def test_a_batch_is_stored_with_one_result_per_message_in_order(
    node, couchdb, database, master_token
):
    bodies = [message_body() for _ in range(5)]
    response = await post_batch(node, master_token, bodies)
    assert response.status == 200
    assert await response.json() == {
        "results": [{"id": body["id"], "stored": True, "created": True} for body in bodies]
    }
    assert couchdb.all_ids(database) == {body["id"] for body in bodies}
    _, doc = http_json("GET", f"{couchdb.db_url(database)}/{bodies[0]['id']}")
    doc.pop("_rev")
    expected = dict(bodies[0])
    # A body without `seq` (an older master's) is ordered by its timestamp.
    seq = expected["timestamp"] * 1000
    assert doc == {"_id": expected.pop("id"), "type": "message", **expected, "seq": seq}


async def test_the_same_batch_twice_is_already_there_with_one_revision_on_two_servers(
    start_node, couchdb_cluster, database, master_token
):
    bodies = [message_body() for _ in range(3)]
    nodes = [await start_node(server) for server in couchdb_cluster[:2]]
    for node in nodes:
        assert (await post_batch(node, master_token, bodies)).status == 200
    again = await post_batch(nodes[0], master_token, [*bodies, new := message_body()])
    assert again.status == 200
    assert [(r["stored"], r["created"]) for r in (await again.json())["results"]] == [
        (True, False),
        (True, False),
        (True, False),
        (True, True),
    ]
    for body in bodies:
        revisions = {
            http_json("GET", f"{server.db_url(database)}/{body['id']}")[1]["_rev"]
            for server in couchdb_cluster[:2]
        }
        assert len(revisions) == 1
        assert revisions.pop().startswith("1-")
    assert couchdb_cluster[0].all_ids(database) == {body["id"] for body in [*bodies, new]}


async def test_a_deleted_message_in_a_batch_stays_deleted_and_the_others_are_stored(
    node, couchdb, database, master_token
):
    gone, fresh = message_body(), message_body()
    await post_batch(node, master_token, [gone])
    assert (
        await node.delete(f"/messages/{gone['id']}", headers=bearer(master_token))
    ).status == 200

    response = await post_batch(node, master_token, [gone, fresh])
    assert response.status == 200
    assert (await response.json())["results"] == [
        {"id": gone["id"], "stored": True, "created": False},
        {"id": fresh["id"], "stored": True, "created": True},
    ]
    assert http_json("GET", f"{couchdb.db_url(database)}/{gone['id']}")[0] == 404
    assert couchdb.all_ids(database) == {fresh["id"]}


async def test_results_are_matched_by_id_when_couchdb_answers_in_another_order(
    node, couchdb, database, master_token, monkeypatch
):
    # pouchdb-server's bulk_docs wrappers may reorder the answer; a result read by
    # position would call the new message revived and delete it.
    gone, fresh = message_body(), message_body()
    await post_batch(node, master_token, [gone])
    await node.delete(f"/messages/{gone['id']}", headers=bearer(master_token))
    store = node.app[keys.STORE]
    bulk_docs = store.couch.bulk_docs

    async def reversed_bulk_docs(db, docs):
        return list(reversed(await bulk_docs(db, docs)))

    monkeypatch.setattr(store.couch, "bulk_docs", reversed_bulk_docs)

    response = await post_batch(node, master_token, [gone, fresh])
    assert (await response.json())["results"] == [
        {"id": gone["id"], "stored": True, "created": False},
        {"id": fresh["id"], "stored": True, "created": True},
    ]
    assert couchdb.all_ids(database) == {fresh["id"]}


async def test_post_messages_is_a_batch_of_one(node, couchdb, database, master_token):
    body = message_body()
    single = await node.post("/messages", json=body, headers=bearer(master_token))
    batch = await post_batch(node, master_token, [body])
    assert (single.status, await single.json()) == (
        201,
        {"id": body["id"], "stored": True, "created": True},
    )
    assert (await batch.json())["results"] == [{"id": body["id"], "stored": True, "created": False}]


def _with_bad(bad, at=1):
    messages = [message_body() for _ in range(3)]
    messages[at] = bad
    return {"messages": messages}


_twin = message_body()


@pytest.mark.parametrize(
    ("payload", "status", "error", "fragment"),
    [
        pytest.param(_with_bad({**message_body(), "id": "x"}), 400, "invalid_message",
                     "messages[1]: id", id="bad-id"),
        pytest.param(_with_bad({**message_body(), "admin": True}, at=2), 400, "invalid_message",
                     "messages[2]", id="unknown-field"),
        pytest.param(_with_bad("text"), 400, "invalid_message", "messages[1]", id="not-object"),
        pytest.param(_with_bad(message_body(ciphertext=base64.b64encode(b"c" * 2048).decode())),
                     413, "too_large", "messages[1]: ciphertext", id="ciphertext-over-cap"),
        pytest.param({"messages": [_twin, message_body(), _twin]}, 400, "invalid_batch", "twice",
                     id="duplicate-id"),
        pytest.param({"messages": []}, 400, "invalid_batch", "messages", id="empty"),
        pytest.param({"messages": message_body()}, 400, "invalid_batch", "messages",
                     id="not-a-list"),
        pytest.param({**_with_bad(message_body()), "more": 1}, 400, "invalid_batch", "messages",
                     id="extra-key"),
        pytest.param({"messages": [message_body() for _ in range(6)]}, 413, "too_large",
                     "over 5 messages", id="too-many"),
    ],
)  # fmt: skip
async def test_one_bad_message_refuses_the_whole_batch_and_nothing_is_stored(
    start_node, couchdb, database, master_token, payload, status, error, fragment
):
    node = await start_node(couchdb, max_ciphertext_bytes=1024, max_batch_messages=5)
    response = await node.post("/messages/batch", json=payload, headers=bearer(master_token))
    assert response.status == status
    body = await response.json()
    assert body["error"] == error
    assert fragment in body["reason"]
    assert couchdb.all_ids(database) == set()


async def test_a_batch_body_over_the_byte_cap_is_refused_with_413_before_it_is_read(
    start_node, couchdb, database, master_token
):
    node = await start_node(couchdb, max_ciphertext_bytes=1024, max_batch_bytes=32 * 1024)
    fits = [message_body(ciphertext=base64.b64encode(b"c" * 1024).decode()) for _ in range(20)]
    too_many_bytes = [
        message_body(ciphertext=base64.b64encode(b"c" * 1024).decode()) for _ in range(40)
    ]
    assert len(json.dumps({"messages": too_many_bytes})) > 32 * 1024
    assert (await post_batch(node, master_token, fits)).status == 200
    refused = await post_batch(node, master_token, too_many_bytes)
    assert refused.status == 413
    assert (await refused.json())["error"] == "too_large"
    assert couchdb.all_ids(database) == {body["id"] for body in fits}


async def test_only_the_master_stores_a_batch(node, couchdb, database, user_token):
    messages = [message_body() for _ in range(2)]
    for headers, status in [
        ({}, 401),
        (bearer("not.a.token"), 401),
        (bearer(user_token("bob")), 403),
    ]:
        response = await node.post("/messages/batch", json={"messages": messages}, headers=headers)
        assert response.status == status
    assert couchdb.all_ids(database) == set()
