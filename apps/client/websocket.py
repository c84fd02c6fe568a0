"""The client's WebSocket to the master: send and wait for the ack, receive messages.

    async with client.connect() as socket:      # KunoClient.connect() gives a Socket
        ack = await socket.send("bob", "hello")  # Ack, or SendError
        async for message in socket.messages():  # OpenedMessage, decrypted
            await socket.received(message.id)

Its own module so that what needs no socket (`kuno inbox`, `kuno login`) does not import
the frame protocol (pydantic) at start-up; kuno.client.api re-exports these names.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from kuno.client.api import ApiError, KunoError, OpenedMessage, SendError, _ClosedOnExit, log
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

if TYPE_CHECKING:
    from kuno.client.api import KunoClient


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
