"""Messages stored by an older release have no `seq`: the node gives them one (timestamp
* 1000), at start and in the sweep, so the recipient's listing still reaches them."""

from __future__ import annotations

from tests.standard.conftest import bearer
from tests.support.messages import message_body, now_ms
from tests.support.pouchdb import http_json


def store_legacy(couchdb, database, body) -> None:
    doc = {"_id": body.pop("id"), "type": "message", **body}
    status, answer = http_json("POST", couchdb.db_url(database), doc)
    assert status == 201, answer


async def listed(node, token) -> list[str]:
    response = await node.get("/messages/bob", headers=bearer(token))
    assert response.status == 200
    return [message["id"] for message in (await response.json())["messages"]]


async def test_messages_without_seq_are_listed_after_start_and_after_a_sweep(
    start_node, couchdb, database, master_token, user_token
):
    couchdb.create_db(database)
    base = now_ms() - 10_000
    before = [message_body("bob", timestamp=base + i) for i in range(3)]
    for body in before:
        store_legacy(couchdb, database, dict(body))
    node = await start_node(couchdb)
    assert await listed(node, user_token("bob")) == [b["id"] for b in before]

    new = message_body("bob", seq=now_ms() * 1000)
    assert (await node.post("/messages", json=new, headers=bearer(master_token))).status == 201
    # Written by an older node (a rolling upgrade) after this one started: the next node
    # start, or the sweep of a node that has not finished its backfill, gives it a seq.
    late = message_body("bob", timestamp=base + 5)
    store_legacy(couchdb, database, dict(late))
    restarted = await start_node(couchdb)
    assert await listed(restarted, user_token("bob")) == [
        *(b["id"] for b in before),
        late["id"],
        new["id"],
    ]
