"""Accounts in the replicated `users` database, read and written through any node that answers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from kuno.common import couch

log = logging.getLogger("kuno.master.users")

T = TypeVar("T")

USERNAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
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
    username: str
    public_key: str
    password_hash: str


class Failover:
    """Several CouchDB servers holding the same replicated data: use one that answers.

    The last server that answered is tried first; an unreachable one costs its timeout.
    """

    def __init__(self, clients: list[couch.CouchClient]) -> None:
        if not clients:
            raise ValueError("at least one CouchDB server is needed")
        self.clients = clients
        self._preferred = 0

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


class UserDirectory:
    def __init__(self, servers: Failover, database: str, hasher: PasswordHasher) -> None:
        self.servers = servers
        self.database = database
        self.hasher = hasher
        self._known: OrderedDict[str, str] = OrderedDict()  # username → public key
        # A hash to verify against when the user does not exist, so both cost the same.
        self._dummy_hash = hasher.hash("not a password of anyone")

    async def prepare(self) -> list[str]:
        """Create the database on every server that answers; returns the ones that did not."""

        async def ensure(client: couch.CouchClient) -> str | None:
            try:
                await client.ensure_database(self.database)
            except couch.CouchError as exc:
                return f"{client!r}: {exc.error}"
            return None

        results = await asyncio.gather(*(ensure(c) for c in self.servers.clients))
        return [r for r in results if r is not None]

    async def create(self, username: str, password: str, public_key: str) -> bool:
        """Register; False when the name is taken."""
        password_hash = await asyncio.to_thread(self.hasher.hash, password)
        doc = {
            "type": "user",
            "username": username,
            "publicKey": public_key,
            "passwordHash": password_hash,
            "createdAt": int(time.time() * 1000),
        }
        try:
            await self.servers.call(lambda c: c.put(self.database, username, doc))
        except couch.Conflict:
            return False
        self._remember(username, public_key)
        return True

    async def get(self, username: str) -> User | None:
        try:
            doc = await self.servers.call(lambda c: c.get(self.database, username))
        except couch.NotFound:
            return None
        user = User(doc["username"], doc["publicKey"], doc["passwordHash"])
        self._remember(username, user.public_key)
        return user

    async def public_key(self, username: str) -> str | None:
        if username in self._known:
            self._known.move_to_end(username)
            return self._known[username]
        user = await self.get(username)
        return user.public_key if user else None

    async def exists(self, username: str) -> bool:
        return await self.public_key(username) is not None

    async def check_password(self, username: str, password: str) -> bool:
        user = await self.get(username)
        stored = user.password_hash if user else self._dummy_hash
        try:
            await asyncio.to_thread(self.hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return False
        return user is not None

    def _remember(self, username: str, public_key: str) -> None:
        self._known[username] = public_key
        self._known.move_to_end(username)
        while len(self._known) > KNOWN_USERS_CACHE:
            self._known.popitem(last=False)


def describe_user(user: User) -> dict[str, Any]:
    return {"username": user.username, "publicKey": user.public_key}
