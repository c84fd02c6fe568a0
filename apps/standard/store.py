"""The message store on one CouchDB: idempotent store, conflict-safe delete, TTL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kuno.common import schema
from kuno.common.batching import NaturalBatcher
from kuno.common.couch import Conflict, CouchClient, CouchError
from kuno.common.messages import MAX_SEQ, Message
from kuno.standard.validation import ascii_int

log = logging.getLogger("kuno.standard.store")

# The schema's indexes (kuno.common.schema): the deployment creates them. A recipient's
# messages in the master's order of acceptance (`seq`, kuno.master.routing.SendOrder);
# `timestamp` is for display only (many share one ms).
RECIPIENT_INDEX = schema.MESSAGES.index("recipient-seq-index")
EXPIRY_INDEX = schema.MESSAGES.index("expires-at-index")
# pouchdb-server needs the sort to name every indexed field, CouchDB accepts it too.
RECIPIENT_SORT = RECIPIENT_INDEX.sort
QUEUE_FULL = "queue_full"
# The schema's queue view: one row per recipient, [messages, ciphertext bytes] of the live
# messages it holds (a deleted document leaves every view). Bytes are the base64 length's
# 3/4: within 2 bytes.
QUEUE_DESIGN = schema.MESSAGES.design("queues").id
QUEUE_VIEW = "size"
# Rounds of _find per page when expired, already-seen or vanished rows fill a batch.
MAX_ROUNDS_PER_PAGE = 10
# A round that could not move on (rows of one millisecond already seen, rows deleted
# meanwhile) doubles its batch, up to this many times limit + 1.
MAX_BATCH_GROWTH = 8
# A cursor's id is a message id (a UUID, 36 characters); longer is no cursor of ours.
MAX_CURSOR_ID = 256


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in one recipient's messages: after (seq, id). The id breaks ties that
    only documents not written by one master can have (older masters' bodies)."""

    seq: int
    id: str

    def encode(self) -> str:
        return f"{self.seq}_{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor `encode` wrote, or ValueError: `<seq>_<id>`, the seq in ASCII
        digits, the id 1-MAX_CURSOR_ID characters not beginning with "_"."""
        seq, sep, doc_id = text.partition("_")
        if not sep or not 0 < len(doc_id) <= MAX_CURSOR_ID or doc_id.startswith("_"):
            raise ValueError("not a cursor")
        return cls(ascii_int(seq, 0, MAX_SEQ), doc_id)

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Cursor:
        return cls(doc["seq"], doc["_id"])


@dataclass(frozen=True)
class Stored:
    """One message's outcome in a store: created, already there, or refused by CouchDB."""

    id: str
    created: bool
    error: str | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.error is not None:
            answer = {"id": self.id, "stored": False, "error": self.error}
            return answer | ({"reason": self.reason} if self.reason else {})
        return {"id": self.id, "stored": True, "created": self.created}


@dataclass(frozen=True)
class QueueBounds:
    """At most `messages` stored messages and `bytes` ciphertext bytes per recipient; a
    queue at `near` (a fraction) of either bound counts as near it."""

    messages: int
    bytes: int
    near: float = 0.8

    def fill(self, messages: int, size: int) -> float:
        """How full a queue of `messages` and `size` bytes is: the larger fraction."""
        return max(messages / self.messages, size / self.bytes)


@dataclass(frozen=True)
class Page:
    messages: list[dict[str, Any]]
    next: Cursor | None


class StoreMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stored = Counter("kuno_messages_stored", "Messages newly stored", registry=registry)
        self.deleted = Counter(
            "kuno_messages_deleted", "Messages deleted by their recipient", registry=registry
        )
        self.expired = Counter(
            "kuno_messages_expired", "Expired messages deleted", registry=registry
        )
        self.queue_full = Counter(
            "kuno_messages_refused_queue_full",
            "New messages refused: their recipient's queue was at its bound",
            registry=registry,
        )
        self.near_bound = Gauge(
            "kuno_queues_near_bound",
            "Recipients whose queue was, when last written, at the near fraction of a bound",
            registry=registry,
        )
        self.write_size = Histogram(
            "kuno_store_write_messages",
            "Messages per CouchDB write (_bulk_docs)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )


class MessageStore:
    def __init__(
        self,
        couch: CouchClient,
        database: str,
        metrics: StoreMetrics,
        *,
        max_write: int = 500,
        writes_in_flight: int = 2,
        bounds: QueueBounds | None = None,
    ) -> None:
        self.couch = couch
        self.database = database
        self.metrics = metrics
        self.bounds = bounds
        self._near_bound: set[str] = set()
        self._backfilled = False
        # Bounds are checked once the queue view is built: its first build over a large
        # database takes longer than a store may wait.
        self._queue_view_ready = False
        self._warming: asyncio.Task[None] | None = None
        # What of the schema was missing at the last check_schema (None: never checked).
        self.missing: list[str] | None = None
        # Concurrent single stores share CouchDB writes: one _bulk_docs per batch.
        self._singles: NaturalBatcher[Message, Stored] = NaturalBatcher(
            self.store, max_items=max_write, in_flight=writes_in_flight, fits=_not_in
        )

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        await self._singles.close()

    async def check_schema(self) -> list[str]:
        """What of the schema's `messages` database (under this store's name) CouchDB
        lacks, as kuno.common.schema.missing says; `[]` once all is there. Creates nothing
        of the schema: the deployment owns it. Once it is all there: the queue view built (see
        _build_queue_view) and the seq of older messages (backfill_seq). Raises CouchError
        when CouchDB does not answer."""
        self.missing = await schema.missing(self.couch, schema.MESSAGES, self.database)
        if not self.missing:
            await self._prepare_bounds()
            # Messages of an older release listed from the start; the sweep does the rest.
            await self.backfill_seq(500, max_batches=20)
        return self.missing

    async def _prepare_bounds(self) -> None:
        if self.bounds is None or self._queue_view_ready or self._warming is not None:
            return
        # At once on a small database; a large one's build goes on in the background.
        if not await self._build_queue_view():
            self._warming = asyncio.create_task(self._keep_building_queue_view())

    async def store(self, messages: Sequence[Message]) -> list[Stored]:
        """Store the messages in one _bulk_docs; one result each, in order.

        New → created; already here (a conflict) or deleted before → not created, still a
        success; new but over its recipient's queue bounds → error "queue_full" (nothing
        stored is dropped for it). The ids must be distinct.
        """
        checked = self.bounds is not None and self._queue_view_ready
        refused = await self._over_bounds(messages) if checked else {}
        if not refused:
            return await self._write(messages)
        accepted = [message for message in messages if message.id not in refused]
        written = {result.id: result for result in await self._write(accepted)} if accepted else {}
        return [refused.get(message.id) or written[message.id] for message in messages]

    async def _write(self, messages: Sequence[Message]) -> list[Stored]:
        self.metrics.write_size.observe(len(messages))
        results = await self.couch.bulk_docs(
            self.database, [message.to_document() for message in messages]
        )
        # Matched by id, not position: pouchdb-server may answer in another order
        # (pouchdb-bulkdocs-wrapper); CouchDB keeps the order, and ids are distinct.
        by_id = {result.get("id"): result for result in results}
        stored: list[Stored] = []
        revived: list[str] = []
        for message in messages:
            result = by_id.get(message.id, {"error": "no_result"})
            error = result.get("error")
            if error == "conflict":
                stored.append(Stored(message.id, created=False))
            elif error is not None:
                log.warning("couchdb refused a message", extra={"id": message.id, "cause": error})
                stored.append(Stored(message.id, created=False, error=str(error)))
            elif not str(result.get("rev", "")).startswith("1-"):
                # It was stored and deleted before: writing over the tombstone revived it.
                # A delivered message must stay deleted, so delete it again.
                revived.append(message.id)
                stored.append(Stored(message.id, created=False))
            else:
                stored.append(Stored(message.id, created=True))
        if revived:
            await self._delete_again(revived)
        self.metrics.stored.inc(sum(result.created for result in stored))
        return stored

    async def _build_queue_view(self) -> bool:
        """Bring the queue view up to date; True once it is (bounds are checked from then
        on), False when CouchDB gave up waiting (the build goes on there)."""
        try:
            await self.couch.request(
                "GET",
                f"/{quote(self.database, safe='')}/{QUEUE_DESIGN}/_view/{QUEUE_VIEW}",
                params={"limit": "0", "reduce": "false"},
            )
        except CouchError as exc:
            log.info("queue view still building", extra={"cause": exc.error})
            return False
        self._queue_view_ready = True
        return True

    async def _keep_building_queue_view(self, pause: float = 1.0) -> None:
        while True:
            if await self._build_queue_view():
                break
            await asyncio.sleep(pause)
        log.info("queue view built: queue bounds apply", extra={"database": self.database})

    async def queue_sizes(self, recipients: Sequence[str]) -> dict[str, tuple[int, int]]:
        """recipient → (messages, ciphertext bytes) it holds now; (0, 0) for none."""
        result = await self.couch.request(
            "POST",
            f"/{quote(self.database, safe='')}/{QUEUE_DESIGN}/_view/{QUEUE_VIEW}",
            # Not waiting for the view to catch up (a first build over a large database
            # takes minutes): the counts may lag by the writes since it last did, which
            # CouchDB then indexes in the background.
            params={"group": "true", "update": "lazy"},
            json={"keys": list(recipients)},
        )
        sizes = dict.fromkeys(recipients, (0, 0))
        for row in result.get("rows", []) if isinstance(result, dict) else []:
            value = row.get("value") if isinstance(row, dict) else None
            if isinstance(value, list) and len(value) == 2 and row.get("key") in sizes:
                sizes[row["key"]] = (int(value[0]), int(value[1]))
        return sizes

    async def _over_bounds(self, messages: Sequence[Message]) -> dict[str, Stored]:
        """The new messages that would take their recipient's queue over a bound, each
        with its refusal; the batch's messages count in order. A message already stored
        (or stored and deleted: a resend) is no new message: it stays a success."""
        bounds = self.bounds
        assert bounds is not None
        sizes = await self.queue_sizes(sorted({m.recipientId for m in messages}))
        over: dict[str, Stored] = {}
        for message in messages:
            count, size = sizes[message.recipientId]
            count, size = count + 1, size + message.ciphertext_bytes
            if count > bounds.messages or size > bounds.bytes:
                which = "messages" if count > bounds.messages else "bytes"
                limit = bounds.messages if which == "messages" else bounds.bytes
                reason = f"the recipient's queue holds its most {which} ({limit})"
                over[message.id] = Stored(message.id, False, QUEUE_FULL, reason)
            else:
                sizes[message.recipientId] = (count, size)
        for recipient, (count, size) in sizes.items():
            if bounds.fill(count, size) >= bounds.near:
                self._near_bound.add(recipient)
            else:
                self._near_bound.discard(recipient)
        self.metrics.near_bound.set(len(self._near_bound))
        if over:
            for known in await self._known_ids(list(over)):
                over[known] = Stored(known, created=False)
        refused = sum(result.error is not None for result in over.values())
        if refused:
            self.metrics.queue_full.inc(refused)
            log.info("messages refused: queue full", extra={"count": refused})
        return over

    async def _known_ids(self, ids: list[str]) -> list[str]:
        """The ids this database has a document (or a tombstone) for."""
        result = await self.couch.request(
            "POST", f"/{quote(self.database, safe='')}/_all_docs", json={"keys": ids}
        )
        rows = result.get("rows", []) if isinstance(result, dict) else []
        return [
            row["key"]
            for row in rows
            if isinstance(row, dict) and isinstance(row.get("value"), dict) and "key" in row
        ]

    async def _delete_again(self, ids: list[str], attempts: int = 3) -> None:
        """Tombstone every leaf of messages a store revived; a leaf that replication
        brought meanwhile (a Conflict) means reading the leaves again."""
        for attempt in range(attempts):
            try:
                await self.couch.delete_all_leaves(self.database, ids)
                return
            except Conflict:
                if attempt == attempts - 1:
                    raise

    async def store_one(self, message: Message) -> Stored:
        """Store one message, in the same CouchDB write as others stored meanwhile."""
        return await self._singles.submit(message)

    async def page(self, recipient: str, now_ms: int, limit: int, after: Cursor | None) -> Page:
        """Up to `limit` non-expired messages of one recipient after `after`, oldest first,
        and the cursor of the next page (None at the end). Expired messages met are deleted.

        A read may race deletes: a row whose document is gone (pouchdb-server answers
        `null`), deleted, malformed or not this recipient's message is skipped. Each round
        reads on from the last position seen (never `skip`, which a delete shifts); a round
        that could not move on reads a larger batch the next time.
        """
        batch = limit + 1
        found: list[dict[str, Any]] = []
        expired: list[str] = []
        position = after
        more = False
        for _ in range(MAX_ROUNDS_PER_PAGE):
            rows = await self._rows_from(recipient, position, batch)
            moved = False
            for row in rows:
                at = _position(row)
                if at is None or (position is not None and at <= position):
                    continue
                position, moved = at, True
                if not is_listable(row, recipient):
                    if not row.get("_deleted"):  # a tombstone read meanwhile is no finding
                        log.warning("skipped a document that is no message", extra={"id": at.id})
                elif row["expiresAt"] <= now_ms:
                    expired.append(row["_id"])
                else:
                    found.append(row)
                    if len(found) > limit:
                        break
            if len(found) > limit or len(rows) < batch:
                break
            if not moved:
                batch = min(batch * 2, (limit + 1) * MAX_BATCH_GROWTH)
        else:
            # Out of rounds with batches still full: the caller continues from the last
            # position, unless nothing moved at all (a `next` would only repeat this page).
            more = position != after
        if expired:
            await self._delete_expired_met(expired)
        if len(found) > limit:
            return Page(found[:limit], Cursor.of(found[limit - 1]))
        return Page(found, position if more else None)

    async def _rows_from(self, recipient: str, position: Cursor | None, batch: int) -> list[Any]:
        """At most `batch` rows of the recipient's index from `position` on (ties included:
        the caller skips what it has seen), as CouchDB answers them, null rows included."""
        result = await self.couch.find(self.database, recipient_query(recipient, position, batch))
        rows = result.get("docs") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise CouchError(502, "bad_response", "_find answered without a docs list")
        return rows

    async def _delete_expired_met(self, ids: list[str]) -> None:
        """Delete expired messages a read met; a concurrent delete of one is not an error
        of the read (the sweep deletes whatever is left)."""
        try:
            await self.delete_expired(ids)
        except Conflict as exc:
            log.info("expired messages changed meanwhile", extra={"cause": exc.error})

    async def live_leaves(self, message_id: str) -> list[dict[str, Any]]:
        return await self.couch.live_leaves(self.database, message_id)

    async def delete(self, leaves: list[dict[str, Any]]) -> None:
        await self.couch.tombstone(self.database, leaves)
        self.metrics.deleted.inc()

    async def delete_many(
        self, ids: Sequence[str], recipient: str | None, attempts: int = 3
    ) -> dict[str, str]:
        """Delete every live leaf of each message in one `_bulk_docs` of tombstones; only
        messages whose every leaf is `recipient`'s (any message when None, the master).

        Returns id → "deleted", "not_found" (no live revision), "forbidden" (a leaf is
        another's) or "conflict" (a revision kept arriving over `attempts` rounds).
        """
        outcome: dict[str, str] = {}
        pending = list(dict.fromkeys(ids))
        for _ in range(attempts):
            leaves = await self._live_leaves_of(pending)
            tombstones: list[dict[str, Any]] = []
            for message_id in pending:
                docs = leaves.get(message_id, [])
                if not docs:
                    outcome[message_id] = "not_found"
                elif recipient is not None and any(
                    doc.get("recipientId") != recipient for doc in docs
                ):
                    outcome[message_id] = "forbidden"
                else:
                    tombstones += docs
            if not tombstones:
                return outcome
            written = await self.couch.bulk_docs(
                self.database,
                [{"_id": d["_id"], "_rev": d["_rev"], "_deleted": True} for d in tombstones],
            )
            # A leaf written meanwhile (replication): read that message's leaves again.
            failed = {str(result.get("id")) for result in written if "error" in result}
            done = {doc["_id"] for doc in tombstones} - failed
            outcome.update(dict.fromkeys(done, "deleted"))
            self.metrics.deleted.inc(len(done))
            pending = [message_id for message_id in pending if message_id in failed]
            if not pending:
                return outcome
        outcome.update(dict.fromkeys(pending, "conflict"))
        return outcome

    async def _live_leaves_of(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """id → its live leaf revisions: one `_all_docs` read for all (winners and the
        revisions of their conflicts), and `open_revs=all` for the few in conflict."""
        result = await self.couch.request(
            "POST",
            f"/{quote(self.database, safe='')}/_all_docs",
            params={"include_docs": "true", "conflicts": "true"},
            json={"keys": ids},
        )
        rows = result.get("rows") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise CouchError(502, "bad_response", "_all_docs answered without rows")
        wanted = set(ids)
        leaves: dict[str, list[dict[str, Any]]] = {}
        in_conflict: list[str] = []
        for row in rows:
            doc = row.get("doc") if isinstance(row, dict) else None
            # A missing or deleted winner: no live leaf (a live one would have won).
            if not isinstance(doc, dict) or doc.get("_deleted") or doc.get("_id") not in wanted:
                continue
            if doc.get("_conflicts"):
                in_conflict.append(doc["_id"])
            else:
                leaves[doc["_id"]] = [doc]
        if in_conflict:
            every = await asyncio.gather(*(self.live_leaves(doc_id) for doc_id in in_conflict))
            leaves.update(zip(in_conflict, every, strict=True))
        return leaves

    async def delete_expired(self, ids: list[str]) -> int:
        deleted = await self.couch.delete_all_leaves(self.database, ids)
        self.metrics.expired.inc(len(deleted))
        return len(deleted)

    async def backfill_seq(self, batch: int, max_batches: int = 100) -> int:
        """Give each message stored before the master set `seq` (an older release) the
        `seq` timestamp * 1000, so the recipient index lists it; returns how many were
        written. Every node writes the same body, so the same revision. Once a pass finds
        none, later calls return 0 at once (a full scan: no index holds the missing)."""
        if self._backfilled:
            return 0
        total = 0
        for _ in range(max_batches):
            result = await self.couch.find(
                self.database,
                {"selector": {"type": "message", "seq": {"$exists": False}}, "limit": batch},
            )
            found = result.get("docs") if isinstance(result, dict) else None
            if not isinstance(found, list):
                raise CouchError(502, "bad_response", "_find answered without a docs list")
            docs = [
                doc | {"seq": doc["timestamp"] * 1000}
                for doc in found
                if isinstance(doc, dict) and _position(doc | {"seq": doc.get("timestamp")})
            ]
            if docs:
                written = await self.couch.bulk_docs(self.database, docs)
                total += sum("error" not in result for result in written)
            if len(found) < batch:
                self._backfilled = True
                break
        if total:
            log.info("gave older messages their seq", extra={"count": total})
        return total

    async def sweep(self, now_ms: int, batch: int, max_batches: int = 100) -> int:
        """Delete expired messages nobody read; returns how many. Messages of an older
        release get their `seq` first (backfill_seq)."""
        await self.backfill_seq(batch, max_batches)
        total = 0
        for _ in range(max_batches):
            result = await self.couch.find(
                self.database,
                {
                    "selector": {"expiresAt": {"$lte": now_ms}},
                    "fields": ["_id"],
                    "use_index": EXPIRY_INDEX.use_index,
                    "limit": batch,
                },
            )
            ids = [doc["_id"] for doc in result["docs"]]
            if not ids:
                break
            total += await self.delete_expired(ids)
            if len(ids) < batch:
                break
        return total


# The fields a listed message must have, with their JSON types (bool is no int here).
_MESSAGE_FIELDS: dict[str, type] = {
    "_id": str,
    "senderId": str,
    "recipientId": str,
    "ciphertext": str,
    "nonce": str,
    "timestamp": int,
    "expiresAt": int,
    "seq": int,
}


def is_listable(row: object, recipient: str) -> bool:
    """Whether a `_find` row is a live message of `recipient` that the API can return.

    False for a row whose document is gone (`null`), a deleted document, another type of
    document, another recipient's, or one whose message fields are missing or mistyped.
    """
    if not isinstance(row, dict) or row.get("_deleted"):
        return False
    if row.get("type", "message") != "message" or row.get("recipientId") != recipient:
        return False
    return all(
        isinstance(row.get(field), kind) and not isinstance(row.get(field), bool)
        for field, kind in _MESSAGE_FIELDS.items()
    )


def _position(row: object) -> Cursor | None:
    """Where a row sits in the index (seq, id), or None when it has no such place."""
    if not isinstance(row, dict):
        return None
    seq, doc_id = row.get("seq"), row.get("_id")
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(doc_id, str):
        return None
    if not 0 <= seq <= MAX_SEQ:
        return None
    return Cursor(seq, doc_id)


def recipient_query(recipient: str, position: Cursor | None, limit: int) -> dict[str, Any]:
    """The `_find` body for at most `limit` of the recipient's rows from `position` on, ties
    included, in (seq, id) order, on the recipient-seq index."""
    return {
        # Index fields and range operators only: pouchdb-server would otherwise filter
        # every later row in memory. The upper bound leaves out values that are not
        # numbers (Mango's collation puts them after every number).
        "selector": {
            "recipientId": recipient,
            "seq": {"$gte": position.seq if position else 0, "$lte": MAX_SEQ},
        },
        "sort": RECIPIENT_SORT,
        "use_index": RECIPIENT_INDEX.use_index,
        "limit": limit,
    }


def _not_in(batch: list[Message], message: Message) -> bool:
    """A _bulk_docs holds each id once: a resend waits for the next write."""
    return all(queued.id != message.id for queued in batch)
