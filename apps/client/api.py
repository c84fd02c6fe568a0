"""The async client library: accounts, the WebSocket, and the inbox on every storage node.

async with KunoClient(master_url, node_urls) as client:
    await client.register("alice", password, KeyPair.generate())
    await client.login("alice", password)
    async with client.connect() as socket:
        ack = await socket.send("bob", "hello")
    inbox = await client.inbox()

The WebSocket half (Socket, Ack, Outgoing: kuno.client.websocket, which imports the frame
protocol) is imported on first use, so that the inbox and the accounts start fast; its
names are importable from here too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from kuno.client.crypto import DecryptionError, KeyPair, open_sealed, seal

if TYPE_CHECKING:
    from kuno.client.websocket import Outgoing, Socket

log = logging.getLogger("kuno.client")

DEFAULT_TIMEOUT = 10.0
NODE_TIMEOUT = 5.0
PAGE_LIMIT = 500  # messages per listing page and per delete request
MAX_PAGES = 1000  # per node and inbox call: 100 000 messages at the default page size


class KunoError(Exception):
    """A failure the user should see, in words."""


class ApiError(KunoError):
    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(f"{status} {error}: {reason}")
        self.status = status
        self.error = error
        self.reason = reason


class SendError(KunoError):
    """The master answered a send with an error frame: nothing was acknowledged."""

    def __init__(self, message_id: str | None, reason: str) -> None:
        super().__init__(reason)
        self.message_id = message_id
        self.reason = reason


@dataclass(frozen=True)
class OpenedMessage:
    """A message as its recipient reads it: decrypted, or with `error` saying why not."""

    id: str
    sender: str
    timestamp: int
    text: str | None  # None when it did not decrypt
    error: str | None = None
    seq: int = 0  # the master's order of acceptance: conversations read in this order


@dataclass
class Inbox:
    messages: list[OpenedMessage] = field(default_factory=list)  # decrypted, oldest first
    undecryptable: list[OpenedMessage] = field(default_factory=list)
    nodes_answered: list[str] = field(default_factory=list)
    nodes_failed: dict[str, str] = field(default_factory=dict)  # node → why
    deleted: dict[str, int] = field(default_factory=dict)  # id → nodes that confirmed

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages + self.undecryptable]


def _node_base(url: str) -> str:
    return url.rstrip("/")


class _ClosedOnExit:
    """`async with` leaves by awaiting the subclass's close()."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class KunoClient(_ClosedOnExit):
    def __init__(
        self,
        master_url: str,
        node_urls: list[str] | tuple[str, ...] = (),
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        node_timeout: float = NODE_TIMEOUT,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        self.master_url = master_url.rstrip("/")
        self.node_urls = [_node_base(url) for url in node_urls]
        self._session = session
        self._own_session = session is None
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.node_timeout = aiohttp.ClientTimeout(total=node_timeout)
        self.page_limit = page_limit
        self.username: str | None = None
        self.token: str | None = None
        self.keys: KeyPair | None = None
        self._public_keys: dict[str, str] = {}

    async def __aenter__(self) -> KunoClient:
        return self

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- accounts -----------------------------------------------------------

    async def register(self, username: str, password: str, keys: KeyPair) -> None:
        """Register; `self.username` becomes the user id the master answers (the name in
        lower case), whatever case was typed."""
        body = await self._master(
            "POST",
            "/api/register",
            json={"username": username, "password": password, "publicKey": keys.public_b64},
        )
        self.username, self.keys = body["username"], keys

    async def login(self, username: str, password: str, keys: KeyPair | None = None) -> str:
        body = await self._master(
            "POST", "/api/login", json={"username": username, "password": password}
        )
        self.username, self.token = body["username"], body["token"]  # the user id
        if keys is not None:
            self.keys = keys
        return body["token"]

    async def refresh(self) -> str:
        """A fresh token for the current, still valid one (POST /api/refresh): no password
        needed until the session's maximum age; ApiError 401 `session_expired` then."""
        body = await self._master("POST", "/api/refresh", auth=True)
        self.token = body["token"]
        return self.token

    def token_expires(self) -> float:
        """When the current token expires, seconds since the epoch (its `exp` claim, read
        without verifying: only to plan the refresh)."""
        if self.token is None:
            raise KunoError("not logged in: run `kuno login` first")
        import jwt  # only `kuno listen` needs it: not imported at start-up

        try:
            claims = jwt.decode(self.token, options={"verify_signature": False})
            return float(claims["exp"])
        except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
            raise KunoError(f"the saved token is unreadable ({exc})") from None

    def use(self, username: str, token: str, keys: KeyPair) -> None:
        """Act as a user whose token and keys were saved earlier."""
        self.username, self.token, self.keys = username, token, keys

    async def public_key(self, username: str) -> str:
        if username not in self._public_keys:
            body = await self._master(
                "GET", f"/api/users/{quote(username, safe='')}/key", auth=True
            )
            self._public_keys[username] = body["publicKey"]
        return self._public_keys[username]

    # --- messages -----------------------------------------------------------

    async def seal(self, to: str, text: str, message_id: str | None = None) -> Outgoing:
        from kuno.client.websocket import Outgoing

        keys = self._require_keys()
        ciphertext, nonce = seal(text, keys, await self.public_key(to))
        return Outgoing(message_id or str(uuid.uuid4()), to, ciphertext, nonce)

    async def open(
        self,
        message_id: str,
        sender: str,
        timestamp: int,
        ciphertext: str,
        nonce: str,
        seq: int = 0,
    ) -> OpenedMessage:
        """Decrypt one message; a failure is returned in `error`, never raised."""
        try:
            sender_key = await self.public_key(sender)
            text = open_sealed(ciphertext, nonce, self._require_keys(), sender_key)
        except DecryptionError as exc:
            why = f"does not decrypt ({exc})"
            return OpenedMessage(message_id, sender, timestamp, None, why, seq)
        except ApiError as exc:
            why = f"sender's key unknown ({exc})"
            return OpenedMessage(message_id, sender, timestamp, None, why, seq)
        return OpenedMessage(message_id, sender, timestamp, text, None, seq)

    def connect(self) -> Socket:
        from kuno.client.websocket import Socket

        return Socket(self)

    async def fetch_inbox(self) -> Inbox:
        """Every stored message from all nodes at once, deduplicated by id and decrypted."""
        username = self._require_login()
        inbox = Inbox()
        pages = await asyncio.gather(
            *(self._all_pages(url, username) for url in self.node_urls), return_exceptions=True
        )
        by_id: dict[str, dict[str, Any]] = {}
        for url, result in zip(self.node_urls, pages, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, KunoError | aiohttp.ClientError | TimeoutError):
                    raise result
                inbox.nodes_failed[url] = str(result) or type(result).__name__
                continue
            inbox.nodes_answered.append(url)
            for stored in result:
                by_id.setdefault(stored["id"], stored)
        if self.node_urls and not inbox.nodes_answered:
            raise KunoError(f"no storage node answered: {inbox.nodes_failed}")
        # The master's order of acceptance; a node's pages come in it, merged here.
        ordered = sorted(by_id.values(), key=lambda m: (m["seq"], m["id"]))
        # Each sender's key once (a failure shows on each of its messages), then decrypt.
        senders = {m["senderId"] for m in ordered}
        await asyncio.gather(*(self.public_key(s) for s in senders), return_exceptions=True)
        for m in ordered:
            message = await self.open(
                m["id"], m["senderId"], m["timestamp"], m["ciphertext"], m["nonce"], m["seq"]
            )
            (inbox.messages if message.error is None else inbox.undecryptable).append(message)
        return inbox

    async def delete_everywhere(self, message_ids: list[str]) -> dict[str, int]:
        """Delete the messages on every node, a page of ids per request (`POST
        /messages/delete`), the nodes at once; id → how many nodes confirmed it gone (a
        node that is down gets the deletes by replication)."""
        self._require_login()
        confirmed = dict.fromkeys(message_ids, 0)
        ids = list(confirmed)
        pages = [
            ids[start : start + self.page_limit] for start in range(0, len(ids), self.page_limit)
        ]

        async def on_node(url: str) -> list[str]:
            gone: list[str] = []
            for page in pages:
                gone += await self._delete_page(url, page)
            return gone

        for gone in await asyncio.gather(*(on_node(url) for url in self.node_urls)):
            for message_id in gone:
                confirmed[message_id] += 1
        return confirmed

    async def inbox(self) -> Inbox:
        """fetch_inbox, then delete what was fetched (undecryptable ones too) from every node."""
        inbox = await self.fetch_inbox()
        inbox.deleted = await self.delete_everywhere(inbox.ids)
        return inbox

    # --- plumbing -----------------------------------------------------------

    def _require_login(self) -> str:
        if self.username is None or self.token is None:
            raise KunoError("not logged in: run `kuno login` first")
        return self.username

    def _require_keys(self) -> KeyPair:
        if self.keys is None:
            raise KunoError("no key pair: register on this machine or restore the key file")
        return self.keys

    def _bearer(self) -> dict[str, str]:
        self._require_login()
        return {"Authorization": f"Bearer {self.token}"}

    async def _master(self, method: str, path: str, *, json: Any = None, auth: bool = False) -> Any:
        headers = self._bearer() if auth else {}
        try:
            async with self.session.request(
                method, self.master_url + path, json=json, headers=headers, timeout=self.timeout
            ) as response:
                return await _json_or_error(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KunoError(f"the master is unreachable ({type(exc).__name__})") from exc

    async def _all_pages(self, node_url: str, username: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        after: str | None = None
        url = URL(f"{node_url}/messages/{quote(username, safe='')}", encoded=True)
        for _ in range(MAX_PAGES):
            params = {"limit": str(self.page_limit)}
            if after is not None:
                params["after"] = after
            async with self.session.get(
                url, params=params, headers=self._bearer(), timeout=self.node_timeout
            ) as response:
                page = await _json_or_error(response)
            messages.extend(page["messages"])
            after = page.get("next")
            if after is None:
                break
        return messages

    async def _delete_page(self, node_url: str, message_ids: list[str]) -> list[str]:
        """The ids the node no longer has (deleted now or already gone); none when the
        node fails."""
        try:
            async with self.session.post(
                f"{node_url}/messages/delete",
                json={"ids": message_ids},
                headers=self._bearer(),
                timeout=self.node_timeout,
            ) as response:
                body = await _json_or_error(response)
        except (KunoError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("delete failed on a node", extra={"node": node_url, "cause": str(exc)})
            return []
        return [
            result["id"]
            for result in body["results"]
            if result.get("deleted") or result.get("error") == "not_found"
        ]


async def _json_or_error(response: aiohttp.ClientResponse) -> Any:
    try:
        body = await response.json(content_type=None)
    except ValueError:
        body = None
    if response.status >= 400:
        error = body.get("error", "error") if isinstance(body, dict) else "error"
        reason = body.get("reason", response.reason or "") if isinstance(body, dict) else ""
        raise ApiError(response.status, str(error), str(reason))
    return body


def __getattr__(name: str) -> Any:
    """Socket, Ack and Outgoing, from kuno.client.websocket on first use (PEP 562)."""
    if name in ("Socket", "Ack", "Outgoing"):
        from kuno.client import websocket

        return getattr(websocket, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
