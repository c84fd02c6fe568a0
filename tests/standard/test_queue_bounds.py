"""Per-recipient queue bounds (issue 14.5): a new message over a recipient's bound of
messages or bytes is refused with `queue_full`; nothing stored is dropped; a metric counts
the queues near their bound."""

from __future__ import annotations

import base64
import os

from prometheus_client.parser import text_string_to_metric_families

from tests.standard.conftest import bearer
from tests.support.messages import message_body


async def post_batch(node, token, bodies):
    response = await node.post("/messages/batch", json={"messages": bodies}, headers=bearer(token))
    assert response.status == 200, await response.text()
    return (await response.json())["results"]


async def metric(node, name: str) -> float:
    text = await (await node.get("/metrics")).text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def test_messages_over_the_count_bound_are_refused_and_none_stored_is_dropped(
    start_node, couchdb, database, master_token, user_token
):
    node = await start_node(couchdb, max_queue_messages=5)
    kept = [message_body("bob") for _ in range(4)]
    assert all(r["created"] for r in await post_batch(node, master_token, kept))
    # One more fits, the next two do not; carol's queue is her own.
    more = [message_body("bob") for _ in range(3)]
    carols = message_body("carol")
    results = await post_batch(node, master_token, [*more, carols])
    assert [r["stored"] for r in results] == [True, False, False, True]
    assert results[1]["error"] == "queue_full"
    assert "messages" in results[1]["reason"] and "5" in results[1]["reason"]
    stored = {b["id"] for b in [*kept, more[0], carols]}
    assert couchdb.all_ids(database) == stored
    assert await metric(node, "kuno_messages_refused_queue_full_total") == 2
    assert await metric(node, "kuno_queues_near_bound") == 1

    # A resend of a stored message is no new message: still a success, not queue_full.
    [again] = await post_batch(node, master_token, [kept[0]])
    assert again == {"id": kept[0]["id"], "stored": True, "created": False}
    single = await node.post("/messages", json=message_body("bob"), headers=bearer(master_token))
    assert single.status == 507
    assert (await single.json())["error"] == "queue_full"

    # Reading frees room.
    deleted = await node.post(
        "/messages/delete",
        json={"ids": [kept[0]["id"], kept[1]["id"]]},
        headers=bearer(user_token("bob")),
    )
    assert deleted.status == 200
    assert [r["stored"] for r in await post_batch(node, master_token, more[1:])] == [True, True]


async def test_messages_over_the_byte_bound_are_refused(start_node, couchdb, master_token):
    node = await start_node(couchdb, max_queue_bytes=2048)
    bodies = [
        message_body("bob", ciphertext=base64.b64encode(os.urandom(900)).decode()) for _ in range(3)
    ]
    results = await post_batch(node, master_token, bodies)
    assert [r["stored"] for r in results] == [True, True, False]
    assert "bytes" in results[2]["reason"] and "2048" in results[2]["reason"]
