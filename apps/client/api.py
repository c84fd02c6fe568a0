"""The async client library: accounts, the WebSocket, and the inbox on every storage node.

async with KunoClient(master_url, node_urls) as client:
    await client.register("alice", password, KeyPair.generate())
    await client.login("alice", password)
    async with client.connect() as socket:
        ack = await socket.send("bob", "hello")
    inbox = await client.inbox()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
from yarl import URL

from kuno.client.crypto import DecryptionError, KeyPair, open_sealed, seal
from kuno.common.protocol import (
    SERVER_FRAMES,
    AckFrame,
    ErrorFrame,
    FrameError,
    MessageFrame,
    ReadyFrame,
    ReceivedFrame,
    RefreshedFrame,
    RefreshFrame,
    SendFrame,
    parse_frame,
    serialise,
)

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
class Ack:
    id: str
    delivered: bool
    stored: int
    nodes: int
    storage: str = "enabled"

    @classmethod
    def of(cls, frame: AckFrame) -> Ack:
        return cls(frame.id, frame.delivered, frame.stored, frame.nodes, frame.storage or "enabled")


@dataclass(frozen=True)
class Outgoing:
    """A sealed send frame; resending this very frame never duplicates the message."""

    id: str
    to: str
    ciphertext: str
    nonce: str

    def frame(self) -> SendFrame:
        # Not validated here: the master judges the frame and answers an error frame.
        return SendFrame.model_construct(
            id=self.id, to=self.to, ciphertext=self.ciphertext, nonce=self.nonce
        )


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


class Socket(_ClosedOnExit):
    """The authenticated WebSocket: send and wait for the ack, receive decrypted messages."""

    def __init__(self, client: KunoClient) -> None:
        self.client = client
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.errors: asyncio.Queue[SendError] = asyncio.Queue()  # error frames without a send
        self._incoming: asyncio.Queue[OpenedMessage | None] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[Ack]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._refreshed: asyncio.Future[int] | None = None
        self.close_code: int | None = None

    async def __aenter__(self) -> Socket:
        await self.open()
        return self

    async def open(self) -> None:
        client = self.client
        try:
            # The token goes in a header: it never appears in a URL, so never in an access log.
            self.ws = await client.session.ws_connect(
                client.master_url + "/ws", headers=client._bearer(), heartbeat=30.0
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise ApiError(401, "unauthorized", "the token is invalid or expired") from exc
            raise KunoError(f"WebSocket refused ({exc.status})") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KunoError(f"the master is unreachable ({type(exc).__name__})") from exc
        try:
            ready = parse_frame(
                await self.ws.receive_str(timeout=client.timeout.total), SERVER_FRAMES
            )
        except FrameError as exc:
            raise KunoError(f"unexpected first frame ({exc.reason})") from None
        if not isinstance(ready, ReadyFrame):
            raise KunoError(f"unexpected first frame {ready.type!r}")
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def send(self, to: str, text: str, message_id: str | None = None) -> Ack:
        return await self.send_sealed(await self.client.seal(to, text, message_id))

    async def send_sealed(self, outgoing: Outgoing, within: float | None = None) -> Ack:
        """Send (or resend) a sealed frame; the Ack once stored, else SendError."""
        ws = self._require_open()
        future = self._waiting.get(outgoing.id)
        if future is None or future.done():
            future = self._waiting[outgoing.id] = asyncio.get_running_loop().create_future()
        await ws.send_str(serialise(outgoing.frame()))
        try:
            async with asyncio.timeout(within or self.client.timeout.total):
                return await asyncio.shield(future)
        finally:
            if future.done():
                self._waiting.pop(outgoing.id, None)

    async def receive(self, within: float | None = None) -> OpenedMessage:
        """The next message pushed to us, decrypted (or with `error` set)."""
        async with asyncio.timeout(within):
            message = await self._incoming.get()
        if message is None:
            self._incoming.put_nowait(None)  # stay closed for the next caller
            raise KunoError(f"the connection closed ({self.close_code})")
        return message

    async def messages(self) -> AsyncIterator[OpenedMessage]:
        while True:
            try:
                yield await self.receive()
            except KunoError:
                return

    async def received(self, message_id: str) -> None:
        """Tell the master we have it: it deletes the message from every node."""
        frame = ReceivedFrame.model_construct(id=message_id)  # the master checks the id
        await self._require_open().send_str(serialise(frame))

    async def refresh(self, within: float | None = None) -> int:
        """Get a fresh token (KunoClient.refresh) and hand it to the master on this socket,
        which then stays open until it expires: returns that time, ms since the epoch.
        ApiError when no token is issued, SendError when the master refuses it."""
        token = await self.client.refresh()
        ws = self._require_open()
        self._refreshed = asyncio.get_running_loop().create_future()
        await ws.send_str(serialise(RefreshFrame(token=token)))
        async with asyncio.timeout(within or self.client.timeout.total):
            return await self._refreshed

    async def keep_fresh(
        self, on_token: Callable[[str], None] | None = None, share: float = 2 / 3
    ) -> None:
        """Refresh the socket's token after `share` of each token's life, for as long as the
        session lasts (then the master closes the socket with 4401); `on_token` gets each new
        token (to save it). A master that does not answer is asked again, until expiry."""
        while self.ws is not None and not self.ws.closed:
            expires = self.client.token_expires()
            await asyncio.sleep(max((expires - time.time()) * share, 0.0))
            try:
                await self.refresh()
            except ApiError as exc:
                log.warning("token not refreshed: %s", exc)
                if exc.status in (401, 403):
                    return  # the session is over: the socket closes at expiry
            except (KunoError, TimeoutError) as exc:
                log.warning("token not refreshed yet: %s", exc)
                if self.ws is None or self.ws.closed or time.time() >= expires:
                    return
                await asyncio.sleep(1.0)
                continue
            if on_token is not None and self.client.token is not None:
                on_token(self.client.token)

    def _require_open(self) -> aiohttp.ClientWebSocketResponse:
        if self.ws is None or self.ws.closed:
            raise KunoError(f"the connection is closed ({self.close_code})")
        return self.ws

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                if raw.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = parse_frame(raw.data, SERVER_FRAMES)
                except FrameError as exc:
                    log.warning("frame from the master ignored", extra={"reason": exc.reason})
                    continue
                await self._dispatch(frame)
        finally:
            self.close_code = self.ws.close_code
            failure = SendError(None, f"the connection closed ({self.close_code})")
            for future in [*self._waiting.values(), self._refreshed]:
                if future is not None and not future.done():
                    future.set_exception(failure)
            self._incoming.put_nowait(None)

    async def _dispatch(
        self, frame: ReadyFrame | MessageFrame | AckFrame | RefreshedFrame | ErrorFrame
    ) -> None:
        if isinstance(frame, MessageFrame):
            message = await self.client.open(
                frame.id, frame.sender, frame.timestamp, frame.ciphertext, frame.nonce, frame.seq
            )
            self._incoming.put_nowait(message)
            return
        if isinstance(frame, RefreshedFrame):
            if self._refreshed is not None and not self._refreshed.done():
                self._refreshed.set_result(frame.expiresAt)
            return
        if not isinstance(frame, AckFrame | ErrorFrame):
            return
        if frame.id is None and self._refreshed is not None and not self._refreshed.done():
            # The refresh's answer: its error frames carry no id.
            self._refreshed.set_exception(SendError(None, frame.reason))
            return
        future = self._waiting.get(frame.id) if frame.id is not None else None
        if isinstance(frame, AckFrame):
            if future is not None and not future.done():
                future.set_result(Ack.of(frame))
        elif future is not None and not future.done():
            future.set_exception(SendError(frame.id, frame.reason))
        else:
            self.errors.put_nowait(SendError(frame.id, frame.reason))
