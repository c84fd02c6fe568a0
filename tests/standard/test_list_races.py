"""GET /messages/{userId} while the same user's messages are being deleted (issue 11 item 4).

pouchdb-server answers a `_find` row whose document was deleted meanwhile as `null`; CouchDB
3 may list a document whose index row is stale. A read racing a delete must never fail, a
deleted message is simply not listed, and paging still reaches every message that stays.
"""

from __future__ import annotations

import asyncio
import time

from kuno.standard.store import Cursor
from tests.standard.conftest import bearer
from tests.support.messages import message_body, now_ms

KEPT_EVERY = 3  # messages 0, 3, 6, ... are never deleted: every listing must show them
MESSAGES = 30 * KEPT_EVERY
LISTING_LIMIT = 3
LISTERS = 2
MAX_SECONDS = 60.0


async def test_listings_racing_deletes_never_fail_and_skip_only_deleted_messages(
    node, master_token, user_token
):
    base = now_ms()
    # Pairs share a millisecond: ties are paged by id.
    bodies = [message_body("bob", timestamp=base + i // 2) for i in range(MESSAGES)]
    stored = await node.post(
        "/messages/batch", json={"messages": bodies}, headers=bearer(master_token)
    )
    assert stored.status == 200
    bodies.sort(key=lambda b: (b["timestamp"], b["id"]))
    order = [b["id"] for b in bodies]
    kept = order[::KEPT_EVERY]
    token = bearer(user_token("bob"))
    deleted: set[str] = set()
    deletes_done = asyncio.Event()
    failures: list[tuple[int, str]] = []
    listings = 0
    deadline = time.monotonic() + MAX_SECONDS

    async def page(limit: int, after: str | None) -> dict | None:
        params = {"limit": str(limit)} | ({"after": after} if after else {})
        response = await node.get("/messages/bob", params=params, headers=token)
        if response.status != 200:
            failures.append((response.status, await response.text()))
            return None
        return await response.json()

    async def delete(doc_id: str) -> None:
        response = await node.delete(f"/messages/{doc_id}", headers=token)
        assert response.status == 200, await response.text()
        deleted.add(doc_id)

    async def read_across(index: int) -> None:
        """One page starting at kept message `index`, while the two after it are deleted:
        the next kept message must be on it, and nothing deleted before the read began."""
        gone = set(deleted)
        before = bodies[index]
        # A body without `seq` is placed by its timestamp (ms * 1000).
        cursor = Cursor(before["timestamp"] * 1000, before["id"])
        listed = await page(KEPT_EVERY + 1, cursor.encode())
        if listed is not None:
            ids = [message["id"] for message in listed["messages"]]
            assert not set(ids) & gone, "a deleted message was listed"
            if index + KEPT_EVERY < len(order):
                assert order[index + KEPT_EVERY] in ids, "a page lost a message that stays"

    async def delete_all() -> None:
        try:
            for index in range(0, len(order), KEPT_EVERY):
                doomed = order[index + 1 : index + KEPT_EVERY]
                await asyncio.gather(*(delete(d) for d in doomed), read_across(index))
        finally:
            deletes_done.set()

    async def list_all() -> None:
        """Whole listings, page by page, until the deletes are over."""
        nonlocal listings
        while not deletes_done.is_set() and time.monotonic() < deadline:
            gone = set(deleted)
            ids, after = [], None
            while (listed := await page(LISTING_LIMIT, after)) is not None:
                ids += [message["id"] for message in listed["messages"]]
                if (after := listed["next"]) is None:
                    assert [i for i in ids if i in set(kept)] == kept, "paging lost a message"
                    assert ids == [i for i in order if i in set(ids)], "out of order"
                    assert not set(ids) & gone, "a deleted message was listed"
                    break
            listings += 1

    await asyncio.gather(delete_all(), *(list_all() for _ in range(LISTERS)))
    assert failures == []
    assert listings > 0
    response = await node.get("/messages/bob", headers=token)
    assert [m["id"] for m in (await response.json())["messages"]] == kept
