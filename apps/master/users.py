"""Accounts in the replicated `users` database: written on a majority of the CouchDB
servers, read through any server that answers, never served while in conflict."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import aiohttp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from kuno.common import couch, schema

if TYPE_CHECKING:
    from kuno.master.config import MasterSettings

from kuno.common.names import InvalidUsername, canonical_username, is_reserved, is_valid_username

log = logging.getLogger("kuno.master.users")

T = TypeVar("T")

PUBLIC_KEY_BYTES = 32  # X25519
# Known usernames remembered in memory: accounts are never deleted, so a hit stays true.
KNOWN_USERS_CACHE = 10_000


def decode_public_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("publicKey must be base64") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"publicKey must be {PUBLIC_KEY_BYTES} bytes (X25519)")
    return raw


@dataclass(frozen=True)
class User:
    """An account. `user_id` is the canonical name (kuno.common.names): the tokens' subject
    and the messages' `senderId`/`recipientId`; `display_name` is the name as its owner
    typed it at registration."""

    user_id: str
    display_name: str
    public_key: str
    password_hash: str
    # The document's id: the user id, or the name as typed for an account made before
    # names were canonical (a legacy account, see UserDirectory.migrate).
    doc_id: str


class AccountConflict(Exception):
    """The account's document has conflicting revisions with different content (two
    registrations of one name met after a partition): it is served to nobody until an
    operator keeps one (`kuno-master accounts resolve`)."""

    def __init__(self, user_id: str, revisions: list[str]) -> None:
        super().__init__(f"account {user_id!r} has conflicting revisions {revisions}")
        self.user_id = user_id
        self.revisions = revisions


class NoMajority(Exception):
    """A write reached fewer than a strict majority of the configured CouchDB servers."""

    def __init__(self, accepted: int, needed: int, servers: int) -> None:
        super().__init__(
            f"{accepted} of {servers} CouchDB servers accepted the account, {needed} needed"
        )
        self.accepted = accepted
        self.needed = needed
        self.servers = servers


class Failover:
    """Several CouchDB servers holding the same replicated data: use one that answers.

    The last server that answered is tried first; an unreachable one costs its timeout.
    """

    def __init__(self, clients: list[couch.CouchClient]) -> None:
        if not clients:
            raise ValueError("at least one CouchDB server is needed")
        self.clients = clients
        self._preferred = 0

    @classmethod
    def of(cls, session: aiohttp.ClientSession, settings: MasterSettings) -> Failover:
        """Every CouchDB server of the master's settings, with its credentials."""
        return cls(
            [
                couch.CouchClient(
                    session,
                    str(url),
                    settings.couchdb_user,
                    settings.couchdb_password_value,
                    timeout=settings.couchdb_timeout,
                )
                for url in settings.couchdb_urls
            ]
        )

    async def call(self, operation: Callable[[couch.CouchClient], Awaitable[T]]) -> T:
        last: couch.Unavailable | None = None
        count = len(self.clients)
        for step in range(count):
            index = (self._preferred + step) % count
            client = self.clients[index]
            try:
                result = await operation(client)
            except couch.Unavailable as exc:
                log.warning("couchdb unavailable, trying the next", extra={"couchdb": repr(client)})
                last = exc
                continue
            self._preferred = index
            return result
        assert last is not None
        raise last


def majority(servers: int) -> int:
    """The smallest strict majority of `servers`: 2 of 3, 3 of 4, 1 of 1."""
    return servers // 2 + 1


class UserDirectory:
    """Accounts in the database `database` on every configured CouchDB server.

    A registration writes one byte-identical document (id: the canonical name) to every
    server at once and counts only when a strict majority accepted it; two majorities
    always share a server, which refuses the second (409), so two registrations of one
    name cannot both succeed, whatever partitions do. Reads use one server that answers
    and never serve a document whose revisions conflict (AccountConflict).
    """

    def __init__(self, servers: Failover, database: str, hasher: PasswordHasher) -> None:
        self.servers = servers
        self.database = database
        self.hasher = hasher
        # User ids known to exist: an account never goes away once registered.
        self._known: OrderedDict[str, None] = OrderedDict()
        # Servers (URLs) found holding the schema's users database: not checked again.
        self._schema_complete: set[str] = set()
        # A hash to verify against when the user does not exist, so both cost the same.
        self._dummy_hash = hasher.hash("not a password of anyone")

    async def check_schema(self) -> list[str]:
        """What of the schema's `users` database (kuno.common.schema, under this
        directory's name) each server lacks, one line each: `"<url>: database users"`, or
        `"<url>: <CouchError kind>"` for a server that did not answer; `[]` once every
        server had it. A server found complete is not asked again. Creates nothing: the
        deployment owns the schema."""

        async def check(client: couch.CouchClient) -> list[str]:
            url = couch.redact_url(str(client.url))
            try:
                missing = await self._schema_missing(client)
            except couch.CouchError as exc:
                return [f"{url}: {exc.error}"]
            return [f"{url}: {what}" for what in missing]

        results = await asyncio.gather(*(check(c) for c in self.servers.clients))
        return [line for lines in results for line in lines]

    async def _schema_missing(self, client: couch.CouchClient) -> list[str]:
        """What of the users database the server lacks (schema.missing); `[]`, unasked,
        once it had it all. Raises the CouchError of a server that does not answer."""
        url = couch.redact_url(str(client.url))
        if url in self._schema_complete:
            return []
        missing = await schema.missing(client, schema.USERS, self.database)
        if not missing:
            self._schema_complete.add(url)
        return missing

    async def health(self) -> list[dict[str, Any]]:
        """Each server, asked at once: {"url" (no credentials), "reachable": true,
        "flavour"} (and "missing": what of the schema it lacks, until it had it all) or
        {"url", "reachable": false, "reason" (the CouchError kind)}."""

        async def one(client: couch.CouchClient) -> dict[str, Any]:
            url = couch.redact_url(str(client.url))
            try:
                info = await client.server_info()
                missing = await self._schema_missing(client)
            except couch.CouchError as exc:
                return {"url": url, "reachable": False, "reason": exc.error}
            state: dict[str, Any] = {"url": url, "reachable": True, "flavour": couch.flavour(info)}
            if missing:
                state["missing"] = missing
            return state

        return list(await asyncio.gather(*(one(c) for c in self.servers.clients)))

    async def create(self, username: str, password: str, public_key: str) -> bool:
        """Register `username` (as typed; its canonical form is the user id and document id).

        True when a strict majority of the configured servers stored the account; False
        when the name is reserved or taken (a server already holds it: the copies written
        elsewhere are deleted again). Raises InvalidUsername for an invalid name, and
        NoMajority when too few servers answered (the copies written are deleted again,
        best effort: a copy on a server that went away meanwhile stays and shows in
        `kuno-master accounts list` if it ever contradicts a later registration).
        """
        user_id = canonical_username(username)
        if is_reserved(user_id):
            return False
        password_hash = await asyncio.to_thread(self.hasher.hash, password)
        doc = {
            "type": "user",
            "username": user_id,
            "displayName": username,
            "publicKey": public_key,
            "passwordHash": password_hash,
            "createdAt": int(time.time() * 1000),
        }
        # Shielded: a client that goes away must not leave a write without its take-back.
        created = await asyncio.shield(self._write_on_majority(user_id, doc, take_back=True))
        if created:
            self._remember(user_id)
        return created

    async def _write_on_majority(self, doc_id: str, doc: dict[str, Any], take_back: bool) -> bool:
        """POST the same document to every server; see create() for the outcome."""
        clients = self.servers.clients
        results = await asyncio.gather(
            *(client.create(self.database, {"_id": doc_id, **doc}) for client in clients),
            return_exceptions=True,
        )
        written: list[tuple[couch.CouchClient, str]] = []
        taken = False
        for client, result in zip(clients, results, strict=True):
            if isinstance(result, couch.Conflict):
                # Replication may carry this very write to a slow server before our own
                # request reaches it: the same content there is ours, not a rival's.
                result = await self._own_copy(client, doc_id, doc)
            if isinstance(result, dict):
                written.append((client, str(result.get("rev", ""))))
            elif isinstance(result, couch.Conflict):
                taken = True
            elif isinstance(result, couch.CouchError):
                log.warning(
                    "couchdb did not store an account",
                    extra={"couchdb": repr(client), "cause": result.error},
                )
            elif isinstance(result, BaseException):
                raise result
        needed = majority(len(clients))
        if not taken and len(written) >= needed:
            return True
        if take_back:
            await self._take_back(doc_id, written)
        if taken:
            return False
        raise NoMajority(len(written), needed, len(clients))

    async def _own_copy(
        self, client: couch.CouchClient, doc_id: str, doc: dict[str, Any]
    ) -> dict[str, Any] | couch.CouchError:
        """After a 409: `{"rev": ...}` when the server holds exactly `doc` (this write,
        replicated there first), else the Conflict or the error of reading it."""
        try:
            existing = await client.request("GET", _doc_path(self.database, doc_id))
        except couch.NotFound:
            return couch.Conflict(409, "conflict", "deleted meanwhile")
        except couch.CouchError as exc:
            return exc
        if _content(existing) == doc:
            return {"rev": existing["_rev"]}
        return couch.Conflict(409, "conflict", "the name is taken")

    async def _take_back(self, doc_id: str, written: list[tuple[couch.CouchClient, str]]) -> None:
        """Delete exactly the revisions this registration wrote (never another's)."""

        async def delete(client: couch.CouchClient, rev: str) -> None:
            try:
                await client.tombstone(self.database, [{"_id": doc_id, "_rev": rev}])
            except couch.CouchError as exc:
                log.error(
                    "an account copy of a refused registration stays; "
                    "see `kuno-master accounts list`",
                    extra={"couchdb": repr(client), "username": doc_id, "cause": exc.error},
                )

        await asyncio.gather(*(delete(client, rev) for client, rev in written))

    async def get(self, username: str) -> User | None:
        """The account of a name as typed (any case); None when absent or the name invalid.

        The canonical id first, then, for an account made before names were canonical,
        the name exactly as typed. Raises AccountConflict when the document has
        conflicting revisions with different content, couch.Unavailable when no server
        answers.
        """
        try:
            user_id = canonical_username(username)
        except InvalidUsername:
            return None
        user = await self.servers.call(lambda c: self._read(c, user_id, user_id))
        if user is None and username != user_id:
            user = await self.servers.call(lambda c: self._read(c, username, user_id))
        if user is not None:
            self._remember(user_id)
        return user

    async def _read(self, client: couch.CouchClient, doc_id: str, user_id: str) -> User | None:
        path = _doc_path(self.database, doc_id)
        try:
            doc = await client.request("GET", path, params={"conflicts": "true"})
        except couch.NotFound:
            return None
        revisions = doc.get("_conflicts") or []
        if revisions:
            others = await asyncio.gather(
                *(client.request("GET", path, params={"rev": rev}) for rev in revisions),
                return_exceptions=True,
            )
            for other in others:
                if isinstance(other, couch.NotFound):
                    continue  # deleted meanwhile
                if isinstance(other, BaseException):
                    raise other
                if _content(other) != _content(doc):
                    raise AccountConflict(user_id, [doc["_rev"], *revisions])
            # Copies of one registration whose histories differed (a retry after a
            # take-back): the same account; keep the winner.
            live = [other for other in others if isinstance(other, dict)]
            with contextlib.suppress(couch.CouchError):
                await client.tombstone(self.database, live)
        return _user(doc, user_id)

    async def read_document(self, doc_id: str) -> User | None:
        """The account stored under exactly this document id (a legacy id, say)."""
        user_id = canonical_username(doc_id)
        return await self.servers.call(lambda c: self._read(c, doc_id, user_id))

    async def user_id(self, name: str) -> str | None:
        """The user id (canonical name) of a name as typed, or None when no such account."""
        try:
            user_id = canonical_username(name)
        except InvalidUsername:
            return None
        if user_id in self._known:
            self._known.move_to_end(user_id)
            return user_id
        try:
            user = await self.get(name)
        except AccountConflict:
            return user_id  # the name exists; nobody can log in as it until resolved
        return user.user_id if user else None

    async def exists(self, name: str) -> bool:
        return await self.user_id(name) is not None

    async def check_password(self, username: str, password: str) -> User | None:
        """The account when the password is right, else None (the same cost either way).

        Raises AccountConflict, couch.Unavailable as get(). An account made before names
        were canonical is copied to its canonical id on its first login (best effort).
        """
        user = await self.get(username)
        stored = user.password_hash if user else self._dummy_hash
        try:
            await asyncio.to_thread(self.hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is not None and user.doc_id != user.user_id:
            try:
                await self.migrate(user)
            except (couch.CouchError, NoMajority) as exc:
                log.warning("legacy account not migrated yet", extra={"cause": str(exc)})
        return user

    async def migrate(self, user: User) -> str:
        """Copy a legacy account (document id = the name as typed) to its canonical id.

        The copy is byte-identical wherever it is written (its fields come from the
        legacy document), so runs on several masters agree. Returns "migrated",
        "canonical" (already there, the same account) or "collision" (another account
        holds the canonical id: an operator decides). Raises NoMajority,
        couch.Unavailable.
        """
        try:
            existing = await self.get(user.user_id)
        except AccountConflict:
            return "collision"
        if existing is not None and existing.doc_id == user.user_id:
            return "canonical" if _same_account(existing, user) else "collision"
        legacy = await self.servers.call(lambda c: c.get(self.database, user.doc_id))
        doc = {
            "type": "user",
            "username": user.user_id,
            "displayName": user.display_name,
            "publicKey": user.public_key,
            "passwordHash": user.password_hash,
            "createdAt": legacy.get("createdAt", 0),
            "migratedFrom": user.doc_id,
        }
        # No take-back: every copy is the same document, a 409 is most likely one.
        if await self._write_on_majority(user.user_id, doc, take_back=False):
            return "migrated"
        after = await self.get(user.user_id)
        return "canonical" if after is not None and _same_account(after, user) else "collision"

    # --- for operators (kuno-master accounts) --------------------------------------

    async def survey(self) -> dict[str, Any]:
        """Accounts that need an operator, read from every server.

        Returns `{"conflicts": [{"username", "revisions": [{"rev", "displayName",
        "publicKey", "createdAt", "servers": [url, ...]}]}], "legacy": [doc id, ...],
        "collisions": [doc id, ...], "unreachable": [url, ...]}`: conflicted accounts
        (served to nobody until resolved); accounts made before names were canonical
        whose canonical id is still missing (`migrate` copies them); and such accounts
        beside another account under their canonical id (an operator decides).
        """
        conflicts: dict[str, dict[str, dict[str, Any]]] = {}
        legacy: set[str] = set()
        collisions: set[str] = set()
        unreachable: list[str] = []
        for client in self.servers.clients:
            url = couch.redact_url(str(client.url))
            try:
                listing = await client.request(
                    "GET",
                    f"/{quote(self.database, safe='')}/_all_docs",
                    params={"include_docs": "true", "conflicts": "true"},
                )
            except couch.CouchError:
                unreachable.append(url)
                continue
            docs = {
                row["id"]: row.get("doc") or {}
                for row in listing.get("rows", [])
                if not row["id"].startswith("_")
            }
            for doc_id, doc in docs.items():
                if is_valid_username(doc_id) and doc_id != doc_id.lower():
                    canonical = docs.get(doc_id.lower())
                    if canonical is None:
                        legacy.add(doc_id)
                    elif _account_fields(canonical) != _account_fields(doc):
                        collisions.add(doc_id)
                if doc.get("_conflicts"):
                    await self._survey_conflict(client, url, doc_id, conflicts)
        return {
            "conflicts": [
                {"username": name, "revisions": list(revisions.values())}
                for name, revisions in sorted(conflicts.items())
            ],
            "legacy": sorted(legacy - collisions),
            "collisions": sorted(collisions),
            "unreachable": unreachable,
        }

    async def _survey_conflict(
        self,
        client: couch.CouchClient,
        url: str,
        doc_id: str,
        conflicts: dict[str, dict[str, dict[str, Any]]],
    ) -> None:
        revisions = conflicts.setdefault(doc_id, {})
        for leaf in await client.live_leaves(self.database, doc_id):
            entry = revisions.setdefault(
                leaf["_rev"],
                {
                    "rev": leaf["_rev"],
                    "displayName": leaf.get("displayName", leaf.get("username")),
                    "publicKey": leaf.get("publicKey"),
                    "createdAt": leaf.get("createdAt"),
                    "servers": [],
                },
            )
            entry["servers"].append(url)

    async def resolve(self, doc_id: str, keep: str) -> dict[str, Any]:
        """Keep revision `keep` of the account document `doc_id`: on every server, delete
        every other live revision. Returns `{"deleted": {url: [rev, ...]}, "unreachable":
        [url, ...]}`; run it again for unreachable servers. Raises ValueError when no
        server that answered holds `keep` (nothing is deleted then)."""
        leaves: dict[str, list[dict[str, Any]]] = {}
        unreachable: list[str] = []
        clients = {couch.redact_url(str(c.url)): c for c in self.servers.clients}
        for url, client in clients.items():
            try:
                leaves[url] = await client.live_leaves(self.database, doc_id)
            except couch.CouchError:
                unreachable.append(url)
        if not any(leaf["_rev"] == keep for found in leaves.values() for leaf in found):
            raise ValueError(f"no server that answered holds revision {keep} of {doc_id!r}")
        deleted: dict[str, list[str]] = {}
        for url, found in leaves.items():
            others = [leaf for leaf in found if leaf["_rev"] != keep]
            try:
                await clients[url].tombstone(self.database, others)
            except couch.CouchError:
                unreachable.append(url)
                continue
            deleted[url] = [leaf["_rev"] for leaf in others]
        self._known.pop(canonical_username(doc_id), None)
        return {"deleted": deleted, "unreachable": unreachable}

    def _remember(self, user_id: str) -> None:
        self._known[user_id] = None
        self._known.move_to_end(user_id)
        while len(self._known) > KNOWN_USERS_CACHE:
            self._known.popitem(last=False)


def describe_user(user: User) -> dict[str, Any]:
    """The key lookup's answer: `{"username": user id, "publicKey": base64}`."""
    return {"username": user.user_id, "publicKey": user.public_key}


def _same_account(one: User, other: User) -> bool:
    return (one.password_hash, one.public_key) == (other.password_hash, other.public_key)


def _account_fields(doc: dict[str, Any]) -> tuple[Any, Any]:
    return doc.get("passwordHash"), doc.get("publicKey")


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    """A document without CouchDB's own fields (`_id`, `_rev`, `_conflicts`, ...)."""
    return {key: value for key, value in doc.items() if not key.startswith("_")}


def _doc_path(db: str, doc_id: str) -> str:
    return f"/{quote(db, safe='')}/{quote(doc_id, safe='')}"


def _user(doc: dict[str, Any], user_id: str) -> User | None:
    fields = (doc.get("username"), doc.get("publicKey"), doc.get("passwordHash"))
    if doc.get("type") != "user" or not all(isinstance(field, str) for field in fields):
        log.error("not an account document", extra={"username": user_id})
        return None
    display_name = doc.get("displayName")
    return User(
        user_id=user_id,
        display_name=display_name if isinstance(display_name, str) else doc["username"],
        public_key=doc["publicKey"],
        password_hash=doc["passwordHash"],
        doc_id=doc["_id"],
    )
