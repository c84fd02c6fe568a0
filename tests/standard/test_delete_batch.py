"""POST /messages/delete: many of the recipient's messages, every leaf, one CouchDB write."""

from __future__ import annotations

import uuid

import pytest

from tests.standard.conftest import bearer
from tests.standard.test_delete import live_leaves, write_conflicting_revision
from tests.support.messages import message_body


async def _stored(node, master_token, bodies):
    response = await node.post(
        "/messages/batch", json={"messages": bodies}, headers=bearer(master_token)
    )
    assert response.status == 200, await response.text()


async def _delete(node, token, ids):
    return await node.post("/messages/delete", json={"ids": ids}, headers=bearer(token))


async def test_the_recipient_deletes_many_messages_with_every_revision(
    node, couchdb, database, master_token, user_token
):
    bodies = [message_body("bob") for _ in range(40)]
    await _stored(node, master_token, bodies)
    write_conflicting_revision(couchdb, database, bodies[3], "b3RoZXI=")
    write_conflicting_revision(couchdb, database, bodies[7], "dGhpcmQ=")
    ids = [body["id"] for body in bodies]

    response = await _delete(node, user_token("bob"), ids)
    assert response.status == 200
    assert await response.json() == {"results": [{"id": i, "deleted": True} for i in ids]}
    # Deleting only the winners would bring the losers back.
    assert couchdb.all_ids(database) == set()
    assert live_leaves(couchdb, database, bodies[3]["id"]) == []

    again = await _delete(node, user_token("bob"), ids[:2])
    assert (await again.json())["results"] == [
        {"id": i, "deleted": False, "error": "not_found"} for i in ids[:2]
    ]


async def test_another_users_messages_are_left_alone_and_named(
    node, couchdb, database, master_token, user_token
):
    mine, carols = message_body("bob"), message_body("carol")
    contested = message_body("bob")
    await _stored(node, master_token, [mine, carols, contested])
    # A conflicting revision addressed to carol: the message is hers too, bob may not.
    write_conflicting_revision(couchdb, database, {**contested, "recipientId": "carol"}, "eA==")
    absent = str(uuid.uuid4())

    ids = [carols["id"], mine["id"], contested["id"], absent]
    response = await _delete(node, user_token("bob"), ids)
    assert (await response.json())["results"] == [
        {"id": carols["id"], "deleted": False, "error": "forbidden"},
        {"id": mine["id"], "deleted": True},
        {"id": contested["id"], "deleted": False, "error": "forbidden"},
        {"id": absent, "deleted": False, "error": "not_found"},
    ]
    assert couchdb.all_ids(database) == {carols["id"], contested["id"]}
    assert len(live_leaves(couchdb, database, contested["id"])) == 2
    unauthenticated = await node.post("/messages/delete", json={"ids": [carols["id"]]})
    assert unauthenticated.status == 401


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "invalid_batch"),
        ({"ids": []}, "invalid_batch"),
        ({"ids": "x"}, "invalid_batch"),
        ({"ids": [str(uuid.uuid4())], "more": 1}, "invalid_batch"),
        ({"ids": ["not-a-uuid"]}, "invalid_id"),
        ({"ids": [7]}, "invalid_id"),
        ({"ids": [str(uuid.uuid4()).upper()]}, "invalid_id"),
    ],
)
async def test_a_bad_body_is_400_naming_the_problem(node, user_token, body, error):
    response = await node.post("/messages/delete", json=body, headers=bearer(user_token("bob")))
    assert response.status == 400
    assert (await response.json())["error"] == error


async def test_more_ids_than_a_page_is_413(start_node, couchdb, user_token):
    node = await start_node(couchdb, max_page_limit=5)
    ids = [str(uuid.uuid4()) for _ in range(6)]
    response = await node.post(
        "/messages/delete", json={"ids": ids}, headers=bearer(user_token("bob"))
    )
    assert response.status == 413
