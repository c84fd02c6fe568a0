"""How a listing treats each `_find` row: null, deleted, malformed and foreign rows are
skipped and paging goes on past them (issue 11 item 4).

The rows come from a fake of `CouchClient.find` that answers like a Mango index on
["recipientId", "seq"] (rows in (seq, id) order, null where the document went
away): a unit test of the store's row handling, next to the real races in
test_list_races.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kuno.standard.store import Cursor, MessageStore, StoreMetrics, is_listable
from tests.support.messages import message_body, now_ms


def document(at: int, doc_id: str, recipient: str = "bob", **changes: Any) -> dict:
    """A stored message document at `at` ms, in place `at` of the order (`seq`); a change
    to `...` removes that field."""
    body = message_body(recipient, timestamp=at, seq=at)
    body.pop("id")
    doc = {"_id": doc_id, "_rev": "1-a", "type": "message", **body}
    doc.update(changes)
    return {key: value for key, value in doc.items() if value is not ...}


class FakeIndex:
    """`find` over (seq, id, row) entries: the selector's seq range and limit,
    rows as given (None for a document deleted between index and read)."""

    def __init__(self, entries: list[tuple[int, str, Any]]) -> None:
        self.entries = sorted(entries, key=lambda entry: entry[:2])
        self.finds = 0
        self.deleted: list[str] = []

    async def find(self, _db: str, query: dict) -> dict:
        self.finds += 1
        low = query["selector"]["seq"]["$gte"]
        chosen = [entry for entry in self.entries if entry[0] >= low]
        chosen = chosen[query.get("skip", 0) :][: query["limit"]]
        # A null row is a document deleted meanwhile: the next read no longer finds it.
        gone = {entry[:2] for entry in chosen if entry[2] is None}
        self.entries = [entry for entry in self.entries if entry[:2] not in gone]
        rows = [entry[2] for entry in chosen]
        return {"docs": rows}

    async def delete_all_leaves(self, _db: str, ids: list[str]) -> list[str]:
        self.deleted += ids
        return ids


def store_on(index: FakeIndex) -> MessageStore:
    return MessageStore(index, "messages", StoreMetrics(CollectorRegistry()))  # type: ignore[arg-type]


async def read_all(store: MessageStore, limit: int) -> tuple[list[str], int]:
    ids, after, pages = [], None, 0
    while True:
        page = await store.page("bob", now_ms(), limit, after)
        ids += [doc["_id"] for doc in page.messages]
        pages += 1
        if (after := page.next) is None:
            return ids, pages
        assert pages < 100


BASE = now_ms()
# Each kind of row that is no live message of bob, made at an index position (t, id).
UNLISTABLE = {
    "null (deleted while read)": lambda t, i: None,
    "a tombstone": lambda t, i: {"_id": i, "_rev": "2-b", "_deleted": True},
    "a deleted document with its fields": lambda t, i: document(t, i, _deleted=True),
    "a design document": lambda t, i: {"_id": "_design/x", "language": "query", "views": {}},
    "another type": lambda t, i: document(t, i, type="receipt"),
    "another recipient": lambda t, i: document(t, i, recipient="carol"),
    "no ciphertext": lambda t, i: document(t, i, ciphertext=...),
    "a number as nonce": lambda t, i: document(t, i, nonce=7),
    "a timestamp as text": lambda t, i: document(t, i, timestamp=str(t)),
    "a float timestamp": lambda t, i: document(t, i, timestamp=t + 0.5),
    "no seq": lambda t, i: document(t, i, seq=...),
    "a seq as text": lambda t, i: document(t, i, seq=str(t)),
    "a boolean expiresAt": lambda t, i: document(t, i, expiresAt=True),
    "a float expiresAt": lambda t, i: document(t, i, expiresAt=1.5e12),
    "a list": lambda t, i: ["not", "a", "document"],
    "a string": lambda t, i: "row",
}


@pytest.mark.parametrize("make", UNLISTABLE.values(), ids=UNLISTABLE.keys())
def test_rows_that_are_no_live_message_of_the_recipient_are_not_listable(make):
    assert not is_listable(make(BASE, "x"), "bob")


def test_a_live_message_of_the_recipient_is_listable():
    assert is_listable(document(BASE, "m"), "bob")


async def test_paging_skips_every_unlistable_row_and_reaches_every_message():
    live = [(BASE + i, f"m{i:02}") for i in range(12)]
    entries = [(t, i, document(t, i)) for t, i in live]
    # Each kind of bad row twice: before a message of the same millisecond and after it.
    for n, make in enumerate(UNLISTABLE.values()):
        for doc_id in (f"a{n:02}", f"z{n:02}"):
            entries.append((BASE + n % 12, doc_id, make(BASE + n % 12, doc_id)))
    index = FakeIndex(entries)
    ids, pages = await read_all(store_on(index), limit=3)
    assert ids == [doc_id for _, doc_id in live]
    assert pages == 4


async def test_rows_that_vanish_between_rounds_shift_no_message_out_of_the_page():
    # Two rows vanish after the first round reads them: a read that went on by a skip
    # count would now pass over two live messages.
    entries = [(BASE + i, f"m{i}", document(BASE + i, f"m{i}")) for i in range(7)]
    entries[1:3] = [(BASE + 1, "n1", None), (BASE + 2, "n2", None)]
    ids, _ = await read_all(store_on(FakeIndex(entries)), limit=3)
    assert ids == ["m0", "m3", "m4", "m5", "m6"]


async def test_a_batch_full_of_vanished_rows_and_seen_ties_still_moves_on():
    # Six messages in one millisecond and rows that vanished: limit 1 reads two rows a
    # round; a round that cannot move past what it has seen reads a larger batch.
    entries = [(BASE, f"m{i}", document(BASE, f"m{i}")) for i in range(6)]
    entries += [(BASE, f"n{i}", None) for i in range(5)]
    entries.append((BASE + 1, "z", document(BASE + 1, "z")))
    index = FakeIndex(entries)
    store = store_on(index)
    page = await store.page("bob", now_ms(), 1, Cursor(BASE, "m5"))
    assert [doc["_id"] for doc in page.messages] == ["z"]
    assert page.next is None


async def test_a_page_that_cannot_move_at_all_ends_the_listing_instead_of_repeating():
    # Nothing but rows without a position (vanished): no `next` that would return here.
    index = FakeIndex([(BASE, f"n{i:03}", None) for i in range(500)])
    page = await store_on(index).page("bob", now_ms(), 2, None)
    assert page.messages == []
    assert page.next is None
    assert index.finds <= 10


async def test_expired_messages_met_are_deleted_and_not_listed():
    past = now_ms() - 1000
    entries = [(past - 5, "old", document(past - 5, "old", expiresAt=past))]
    entries.append((BASE, "new", document(BASE, "new")))
    index = FakeIndex(entries)
    page = await store_on(index).page("bob", now_ms(), 10, None)
    assert [doc["_id"] for doc in page.messages] == ["new"]
    assert index.deleted == ["old"]
