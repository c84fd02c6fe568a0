"""GET /messages/{userId}: the user's own, oldest first, paged, never expired."""

from __future__ import annotations

import pytest

from kuno.standard.store import RECIPIENT_INDEX, Cursor, recipient_query
from tests.standard.conftest import bearer
from tests.support.messages import DAY_MS, message_body, now_ms
from tests.support.pouchdb import http_json


async def _store(node, master_token, bodies):
    for body in bodies:
        response = await node.post("/messages", json=body, headers=bearer(master_token))
        assert response.status == 201


async def _read_all(node, token, user, limit):
    ids, after, pages = [], None, 0
    while True:
        params = {"limit": str(limit)} | ({"after": after} if after else {})
        response = await node.get(f"/messages/{user}", params=params, headers=bearer(token))
        assert response.status == 200
        page = await response.json()
        ids += [m["id"] for m in page["messages"]]
        pages += 1
        after = page["next"]
        if after is None:
            return ids, pages


async def test_messages_come_oldest_first_and_only_the_recipients(node, master_token, user_token):
    base = now_ms()
    newer = message_body("bob", timestamp=base + 2)
    older = message_body("bob", timestamp=base + 1)
    other = message_body("carol", timestamp=base)
    await _store(node, master_token, [newer, older, other])

    response = await node.get("/messages/bob", headers=bearer(user_token("bob")))
    page = await response.json()
    assert [m["id"] for m in page["messages"]] == [older["id"], newer["id"]]
    assert page["next"] is None
    assert page["messages"][0] == older | {"type": "message", "seq": older["timestamp"] * 1000}


async def test_more_than_couchdbs_default_25_come_back(node, master_token, user_token):
    base = now_ms()
    bodies = [message_body("bob", timestamp=base + i) for i in range(40)]
    await _store(node, master_token, bodies)
    response = await node.get("/messages/bob", headers=bearer(user_token("bob")))
    assert [m["id"] for m in (await response.json())["messages"]] == [b["id"] for b in bodies]


async def test_paging_returns_every_message_once_even_with_equal_timestamps(
    node, master_token, user_token
):
    base = now_ms()
    # Seven messages share one millisecond, more than a page: ties are ordered by id.
    bodies = [message_body("bob", timestamp=base + (i // 7)) for i in range(23)]
    await _store(node, master_token, bodies)
    expected = [b["id"] for b in sorted(bodies, key=lambda b: (b["timestamp"], b["id"]))]

    ids, pages = await _read_all(node, user_token("bob"), "bob", limit=5)
    assert ids == expected
    assert pages == 5


async def test_expired_messages_are_never_returned_and_are_deleted_when_met(
    node, couchdb, database, master_token, user_token
):
    past = now_ms() - 40 * DAY_MS
    expired = [message_body("bob", timestamp=past + i, expiresAt=past + DAY_MS) for i in range(3)]
    live = message_body("bob")
    await _store(node, master_token, [*expired, live])

    response = await node.get("/messages/bob", headers=bearer(user_token("bob")))
    assert [m["id"] for m in (await response.json())["messages"]] == [live["id"]]
    assert couchdb.all_ids(database) == {live["id"]}
    metrics = await (await node.get("/metrics")).text()
    assert "kuno_messages_expired_total 3.0" in metrics


async def test_a_page_full_of_expired_messages_still_reaches_the_live_ones(
    node, master_token, user_token
):
    past = now_ms() - 40 * DAY_MS
    expired = [message_body("bob", timestamp=past + i, expiresAt=past + DAY_MS) for i in range(12)]
    live = [message_body("bob", timestamp=now_ms() + i) for i in range(3)]
    await _store(node, master_token, [*expired, *live])
    ids, _ = await _read_all(node, user_token("bob"), "bob", limit=2)
    assert ids == [b["id"] for b in live]


async def test_a_user_cannot_read_another_users_messages(node, master_token, user_token):
    await _store(node, master_token, [message_body("bob")])
    response = await node.get("/messages/bob", headers=bearer(user_token("mallory")))
    assert response.status == 403
    assert (await response.json())["error"] == "forbidden"
    assert (await node.get("/messages/bob")).status == 401


async def test_the_master_may_read_any_users_messages(node, master_token):
    body = message_body("bob")
    await _store(node, master_token, [body])
    response = await node.get("/messages/bob", headers=bearer(master_token))
    assert [m["id"] for m in (await response.json())["messages"]] == [body["id"]]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=-1", "limit=abc", "limit=1001", "after=nonsense", "after=12_"]
)
async def test_bad_paging_parameters_are_refused(node, user_token, query):
    response = await node.get(f"/messages/bob?{query}", headers=bearer(user_token("bob")))
    assert response.status == 400
    assert set(await response.json()) == {"error", "reason"}


async def test_the_query_uses_the_recipient_seq_index(node, couchdb, database, master_token):
    # The node creates the index at start; the server's own plan must pick it.
    await _store(node, master_token, [message_body("bob")])
    for position in (None, Cursor(now_ms() * 1000, "8cf5c89b-e3b2-48ab-ba5e-d8c6000a5255")):
        query = recipient_query("bob", position, 10)
        status, plan = http_json("POST", f"{couchdb.db_url(database)}/_explain", query)
        assert status == 200, plan
        assert plan["index"]["name"] == RECIPIENT_INDEX.name
        fields = [next(iter(f)) for f in plan["index"]["def"]["fields"]]
        assert fields == ["recipientId", "seq"]
