"""DELETE /messages/{id}: the recipient's, every leaf, never back after replication."""

from __future__ import annotations

import uuid

from tests.standard.conftest import bearer
from tests.support.messages import message_body
from tests.support.pouchdb import eventually, http_json


def live_leaves(server, database, doc_id):
    status, leaves = http_json("GET", f"{server.db_url(database)}/{doc_id}?open_revs=all")
    if status == 404:
        return []
    assert status == 200, leaves
    return [leaf["ok"] for leaf in leaves if "ok" in leaf and not leaf["ok"].get("_deleted")]


def write_conflicting_revision(server, database, body, ciphertext):
    """A second leaf of the same id, as a resend with another body would leave."""
    doc = {"_id": body["id"], "_rev": "1-" + uuid.uuid4().hex, "type": "message", **body}
    doc.pop("id")
    doc["ciphertext"] = ciphertext
    status, result = http_json(
        "POST", f"{server.db_url(database)}/_bulk_docs", {"new_edits": False, "docs": [doc]}
    )
    assert status == 201, result


async def test_the_recipient_deletes_a_message(node, couchdb, database, master_token, user_token):
    body = message_body("bob")
    await node.post("/messages", json=body, headers=bearer(master_token))
    response = await node.delete(f"/messages/{body['id']}", headers=bearer(user_token("bob")))
    assert response.status == 200
    assert await response.json() == {"id": body["id"], "deleted": True}
    assert couchdb.all_ids(database) == set()
    again = await node.delete(f"/messages/{body['id']}", headers=bearer(user_token("bob")))
    assert again.status == 404


async def test_nobody_else_deletes_it(node, couchdb, database, master_token, user_token):
    body = message_body("bob")
    await node.post("/messages", json=body, headers=bearer(master_token))
    for headers, status in [({}, 401), (bearer(user_token("alice")), 403)]:
        response = await node.delete(f"/messages/{body['id']}", headers=headers)
        assert response.status == status
    assert couchdb.all_ids(database) == {body["id"]}


async def test_absent_and_invalid_ids(node, user_token):
    absent = await node.delete(f"/messages/{uuid.uuid4()}", headers=bearer(user_token("bob")))
    assert absent.status == 404
    invalid = await node.delete("/messages/../_all_docs", headers=bearer(user_token("bob")))
    assert invalid.status in (400, 404)
    bad = await node.delete("/messages/not-a-uuid", headers=bearer(user_token("bob")))
    assert bad.status == 400


async def test_a_delete_removes_every_conflicting_revision(
    node, couchdb, database, master_token, user_token
):
    body = message_body("bob")
    await node.post("/messages", json=body, headers=bearer(master_token))
    write_conflicting_revision(couchdb, database, body, "b3RoZXI=")
    write_conflicting_revision(couchdb, database, body, "dGhpcmQ=")
    assert len(live_leaves(couchdb, database, body["id"])) == 3

    response = await node.delete(f"/messages/{body['id']}", headers=bearer(user_token("bob")))
    assert response.status == 200
    # Deleting only the winner would bring a loser back; nothing must remain.
    assert live_leaves(couchdb, database, body["id"]) == []
    status, _ = http_json("GET", f"{couchdb.db_url(database)}/{body['id']}")
    assert status == 404


async def test_a_conflicting_revision_of_another_recipient_blocks_the_delete(
    node, couchdb, database, master_token, user_token
):
    body = message_body("bob")
    await node.post("/messages", json=body, headers=bearer(master_token))
    write_conflicting_revision(couchdb, database, {**body, "recipientId": "carol"}, "eA==")
    response = await node.delete(f"/messages/{body['id']}", headers=bearer(user_token("bob")))
    assert response.status == 403
    assert len(live_leaves(couchdb, database, body["id"])) == 2


async def _replicated_both_ways(a, b, database):
    for server in (a, b):
        server.create_db(database)
    b.replicate_from(a, database)
    a.replicate_from(b, database)


async def _caught_up(a, b, database):
    """A marker written on each side has reached the other: replication has passed."""
    for source, target in ((a, b), (b, a)):
        marker = f"marker-{uuid.uuid4()}"
        status, _ = http_json("PUT", f"{source.db_url(database)}/{marker}", {"marker": True})
        assert status == 201
        await eventually(lambda t=target, m=marker: m in t.all_ids(database))


async def _two_bodies_on_unconnected_nodes(start_node, server_pair, master_token):
    """One message id stored with a different body on each of two nodes that do not
    replicate yet: the conflict a resend with another body, or a partition, leaves."""
    node_a, node_b = await start_node(server_pair[0]), await start_node(server_pair[1])
    body = message_body("bob")
    for node, ciphertext in ((node_a, body["ciphertext"]), (node_b, "b3RoZXI=")):
        stored = await node.post(
            "/messages", json=body | {"ciphertext": ciphertext}, headers=bearer(master_token)
        )
        assert stored.status == 201
    return node_a, node_b, body


async def test_a_deleted_message_with_replicated_conflicts_never_comes_back(
    start_node, server_pair, database, master_token, user_token
):
    a, b = server_pair
    node_a, node_b, body = await _two_bodies_on_unconnected_nodes(
        start_node, server_pair, master_token
    )
    await _replicated_both_ways(a, b, database)
    for server in (a, b):
        await eventually(lambda s=server: len(live_leaves(s, database, body["id"])) == 2)

    response = await node_a.delete(f"/messages/{body['id']}", headers=bearer(user_token("bob")))
    assert response.status == 200
    await _caught_up(a, b, database)
    for server in (a, b):
        assert live_leaves(server, database, body["id"]) == []
    for node in (node_a, node_b):
        listed = await node.get("/messages/bob", headers=bearer(user_token("bob")))
        assert (await listed.json())["messages"] == []


async def test_a_message_deleted_on_both_sides_of_a_partition_stays_deleted_after_it_heals(
    start_node, server_pair, database, master_token, user_token
):
    a, b = server_pair
    node_a, node_b, body = await _two_bodies_on_unconnected_nodes(
        start_node, server_pair, master_token
    )
    # Partitioned: the client deletes it from every node it can reach, as `kuno inbox` does.
    for node in (node_a, node_b):
        deleted = await node.delete(f"/messages/{body['id']}", headers=bearer(user_token("bob")))
        assert deleted.status == 200

    await _replicated_both_ways(a, b, database)
    await _caught_up(a, b, database)
    for server in (a, b):
        assert live_leaves(server, database, body["id"]) == []
