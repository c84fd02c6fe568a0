"""WebSocket routing: deliver to the recipient's open sockets, store on every node, ack.

Frames: kuno.common.protocol, after authentication (`Authorization: Bearer` on the upgrade,
or a first frame {"type":"auth","token"} for clients that cannot set headers, such as
browsers).
Close codes: 4401 token expired (not refreshed on the socket: kuno.common.protocol), 1008
bad token, 1009 frame too large, 1007 text not UTF-8, 1013 a socket too slow to take a
frame (Connection), 1011 internal error, 1001 shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web
from prometheus_client import CollectorRegistry, Counter, Gauge

from kuno.common.couch import CouchError
from kuno.common.messages import Message, decoded_size
from kuno.common.protocol import (
    TOKEN_EXPIRED_CLOSE,
    AckFrame,
    ErrorFrame,
    Frame,
    FrameError,
    MessageFrame,
    ReceivedFrame,
    SendFrame,
    serialise,
)
from kuno.common.tokens import TokenSigner
from kuno.master.fanout import QUEUE_FULL, StandardNodes
from kuno.master.metrics import DeliveryMetrics
from kuno.master.users import UserDirectory

log = logging.getLogger("kuno.master.routing")

# Messages remembered so a resend gets the identical document and no second delivery
# (about 200 bytes each: no ciphertext).
RECENT_MESSAGES = 100_000
# Tokens the master mints for a recipient's deletes live this long.
DELETE_TOKEN_TTL = 120.0


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.routed = Counter(
            "kuno_master_messages_routed", "Send frames accepted", registry=registry
        )
        self.delivered = Counter(
            "kuno_master_messages_delivered_online",
            "Messages pushed to at least one open socket of the recipient",
            registry=registry,
        )
        self.acks = Counter(
            "kuno_master_acks", "Acks sent, by how many nodes stored", ["stored"], registry=registry
        )
        self.errors = Counter(
            "kuno_master_frame_errors", "Error frames sent, by kind", ["kind"], registry=registry
        )
        self.connections = Gauge(
            "kuno_master_websockets", "Open authenticated WebSockets", registry=registry
        )
        self.deliveries = DeliveryMetrics(registry)


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    stored: int
    nodes: int
    queue_full: bool = False  # a node refused it: the recipient's queue is at a bound


def content_digest(frame: SendFrame) -> bytes:
    return hashlib.sha256(f"{frame.ciphertext}\0{frame.nonce}".encode()).digest()


@dataclass
class Routed:
    """What the master remembers of a routed message: enough to rebuild its one document
    for a resend, without keeping the ciphertext, and whether it reached a socket."""

    sender: str
    recipient: str
    digest: bytes
    timestamp: int
    expires_at: int
    seq: int
    delivered: bool = False

    def same_content(self, sender: str, frame: SendFrame) -> bool:
        return (self.sender, self.recipient, self.digest) == (
            sender,
            frame.to,
            content_digest(frame),
        )

    def message(self, frame: SendFrame) -> Message:
        """The message every node gets: identical bytes for the first send and each resend."""
        return Message(
            id=frame.id,
            senderId=self.sender,
            recipientId=self.recipient,
            ciphertext=frame.ciphertext,
            nonce=frame.nonce,
            timestamp=self.timestamp,
            expiresAt=self.expires_at,
            seq=self.seq,
        )


class SendOrder:
    """The master's order of acceptance: `next()` gives strictly increasing integers,
    microseconds since the epoch, or one past the last when sends come faster than one per
    microsecond. So a later master process continues above an earlier one's keys as long
    as the wall clock does not step back (the process cannot issue a million keys a second,
    so it never runs ahead of the clock by the time a restart takes)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns() // 1000, self._last + 1)
        return self._last


def cancelled_here() -> bool:
    """True when the running task itself is being cancelled.

    A CancelledError can also come from a future the task awaited that someone else
    cancelled (aiohttp shares one drain waiter among every writer of a socket); that is a
    failure of the awaited thing, not a request to stop.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass(eq=False)
class Connection:
    """One authenticated socket; frames to it are written one at a time.

    A frame the socket does not take within `write_timeout` seconds (lock wait included)
    means the peer cannot keep up: the socket is closed with 1013 (try again later), and
    gets `close_grace` seconds to read that close frame before its connection is dropped.
    """

    user: str
    socket: web.WebSocketResponse
    transport: asyncio.BaseTransport | None = None
    write_timeout: float = 2.0
    close_grace: float = 30.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    # Sends of this socket are accepted one at a time, in the order they arrived.
    accepting: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    closing: bool = field(default=False, init=False)
    #: When the socket's token expires (seconds since the epoch): closed then with 4401.
    expires: float = field(default=math.inf, init=False)
    _expiry: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False, repr=False)

    @property
    def open(self) -> bool:
        return not (self.closing or self.socket.closed)

    async def send(self, frame: Frame) -> bool:
        """Write one frame: True once the socket took it; False when the socket is closed,
        fails or is too slow (then it is closed). Raises only when the caller is cancelled."""
        text = serialise(frame)
        deadline = asyncio.get_running_loop().time() + self.write_timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self.lock.acquire()
        except TimeoutError:
            self.close_slow()
            return False
        try:
            if not self.open:
                return False
            # A task of its own, waited for and never cancelled: cancelling a write that
            # waits for the peer would cancel the drain waiter every writer shares.
            write = self._track(self.socket.send_str(text))
            remaining = deadline - asyncio.get_running_loop().time()
            done, _ = await asyncio.wait({write}, timeout=max(remaining, 0))
            if not done:
                self.close_slow()
                return False
            if write.cancelled():
                # The shared drain waiter was cancelled: no later write succeeds either.
                self.close_slow("socket write cancelled underneath; closing it")
                return False
            failure = write.exception()
            if failure is not None:
                # ConnectionError, RuntimeError: the peer is gone or the socket is closing.
                expected = isinstance(failure, (ConnectionError, RuntimeError))
                self.close_slow(None if expected else f"socket write failed: {failure!r}")
                return False
            return True
        finally:
            self.lock.release()

    def expire_at(self, expires: float) -> None:
        """Close the socket with TOKEN_EXPIRED_CLOSE at `expires` (seconds since the epoch;
        inf: never), instead of at any earlier deadline."""
        self.cancel_expiry()
        self.expires = expires
        if math.isfinite(expires):
            delay = max(expires - time.time(), 0.0)
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expired(self) -> None:
        self._expiry = None
        if self.open:
            log.info("token expired; closing its socket", extra={"user": self.user})
            reason = b"token expired: refresh it on the socket, or log in again"
            self._track(self.close(TOKEN_EXPIRED_CLOSE, reason))

    def close_slow(self, why: str | None = "socket too slow; closing it") -> None:
        """Close with 1013 in the background (logging `why`, if any); the connection is
        dropped after the grace."""
        if self.closing or self.socket.closed:
            self.closing = True
            return
        self.closing = True
        if why is not None:
            log.warning(why, extra={"user": self.user})
        self._track(
            self.close(WSCloseCode.TRY_AGAIN_LATER, b"too slow to read; reconnect and list")
        )

    async def close(self, code: int, message: bytes) -> None:
        """Close with `code`, waiting at most `close_grace` for the peer, then drop it."""
        self.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.close_grace
        try:
            async with asyncio.timeout_at(deadline):
                await self.socket.close(code=code, message=message)
        except asyncio.CancelledError:
            if cancelled_here():
                raise
            # aiohttp's shared drain waiter was cancelled under the close: the close frame
            # is buffered and goes out if the peer reads; it keeps the rest of the grace.
            await asyncio.sleep(max(deadline - loop.time(), 0))
        except Exception as exc:  # a peer gone, or too slow for the grace: dropped below
            log.info("socket closed uncleanly", extra={"user": self.user, "cause": repr(exc)})
        finally:
            self._drop()

    def _drop(self) -> None:
        # Frees a buffer the peer never reads; no-op once the connection is gone.
        if self.transport is not None:
            self.transport.abort()

    def _track(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # seen by the waiter, or not worth a traceback


class Router:
    def __init__(
        self,
        users: UserDirectory,
        nodes: StandardNodes | None,
        signer: TokenSigner,
        ttl_ms: int,
        max_ciphertext_bytes: int,
        metrics: RoutingMetrics,
        delivery_timeout: float = 2.0,
    ) -> None:
        self.users = users
        self.nodes = nodes  # None: storage disabled
        self.signer = signer
        self.ttl_ms = ttl_ms
        self.max_ciphertext_bytes = max_ciphertext_bytes
        self.metrics = metrics
        self.delivery_timeout = delivery_timeout
        self.connections: dict[str, set[Connection]] = {}
        self.closing = False
        self._inflight: dict[str, asyncio.Task[Outcome]] = {}
        self._recent: OrderedDict[str, Routed] = OrderedDict()
        self.order = SendOrder()
        self._background: set[asyncio.Task[Any]] = set()

    # --- connections --------------------------------------------------------

    def add(self, connection: Connection) -> None:
        self.connections.setdefault(connection.user, set()).add(connection)
        self.metrics.connections.inc()

    def remove(self, connection: Connection) -> None:
        sockets = self.connections.get(connection.user)
        if sockets is not None and connection in sockets:
            sockets.discard(connection)
            self.metrics.connections.dec()
            if not sockets:
                del self.connections[connection.user]

    # --- frames -------------------------------------------------------------

    async def on_send(self, connection: Connection, frame: SendFrame) -> AckFrame:
        """The ack or error frame for one send.

        The sends of one socket are accepted (checked, given their `seq`, their fan-out
        started) one at a time in the order they arrived, so that order is the one every
        reader gets; the acks then come as the fan-outs settle."""
        async with connection.accepting:
            if self.closing:
                reason = "the server is shutting down; resend later"
                raise FrameError("shutting_down", reason, frame.id)
            if decoded_size(frame.ciphertext, "ciphertext") > self.max_ciphertext_bytes:
                raise FrameError(
                    "too_large", f"ciphertext over {self.max_ciphertext_bytes} bytes", frame.id
                )
            if not await self.users.exists(frame.to):
                raise FrameError("unknown_recipient", f"unknown recipient {frame.to}", frame.id)
            self.metrics.routed.inc()
            inflight = self.accept(connection.user, frame)
        # Shielded: the fan-out finishes even when the sender's socket goes away.
        outcome = await asyncio.shield(inflight)
        if self.nodes is None:
            self.metrics.acks.labels("disabled").inc()
            return AckFrame(
                id=frame.id, delivered=outcome.delivered, stored=0, nodes=0, storage="disabled"
            )
        self.metrics.deliveries.observe(outcome.stored, outcome.nodes)
        if outcome.stored == 0 and outcome.queue_full:
            raise FrameError(
                "queue_full",
                f"{frame.to}'s queue is full (the most messages or bytes a recipient's "
                "queue may hold); resend after they read their messages",
                frame.id,
            )
        if outcome.stored == 0:
            raise FrameError(
                "not_stored",
                f"not stored on any of {outcome.nodes} nodes; resend the same id later",
                frame.id,
            )
        self.metrics.acks.labels(str(outcome.stored)).inc()
        return AckFrame(
            id=frame.id, delivered=outcome.delivered, stored=outcome.stored, nodes=outcome.nodes
        )

    async def answer_send(self, connection: Connection, frame: SendFrame) -> None:
        """Answer one send with its ack or an error frame, whatever failed underneath."""
        try:
            reply = await self.on_send(connection, frame)
        except FrameError as exc:
            await self.refuse(connection, exc)
            return
        except CouchError as exc:
            log.warning("accounts unavailable", extra={"id": frame.id, "cause": exc.error})
            reason = "the account store is unreachable; resend later"
            await self.refuse(connection, FrameError("unavailable", reason, frame.id))
            return
        except asyncio.CancelledError:
            if cancelled_here():
                raise
            # Cancelled underneath (a future someone else cancelled), not by us: answer.
            log.exception("routing failed: cancelled underneath", extra={"id": frame.id})
            await self.refuse(connection, FrameError("internal", "internal error", frame.id))
            return
        except Exception:
            log.exception("routing failed", extra={"id": frame.id})
            await self.refuse(connection, FrameError("internal", "internal error", frame.id))
            return
        await connection.send(reply)

    async def refuse(self, connection: Connection, error: FrameError) -> None:
        """An error frame; the connection stays open."""
        self.metrics.errors.labels(error.kind).inc()
        await connection.send(ErrorFrame(id=error.message_id, reason=error.reason))

    def accept(self, sender: str, frame: SendFrame) -> asyncio.Task[Outcome]:
        """Deliver and store once per id: the fan-out started now, or the one in flight for
        this id (a resend joins it, or repeats it with the same document). The message's
        `seq` is taken here, once per id."""
        inflight = self._inflight.get(frame.id)
        routed = self._recent.get(frame.id)
        if routed is not None and not routed.same_content(sender, frame):
            raise FrameError("id_reused", "this id belongs to another message", frame.id)
        if inflight is None:
            if routed is None:
                # The only place timestamp, expiresAt and seq are set, once per message id.
                timestamp = int(time.time() * 1000)
                routed = Routed(
                    sender,
                    frame.to,
                    content_digest(frame),
                    timestamp,
                    timestamp + self.ttl_ms,
                    self.order.next(),
                )
            inflight = asyncio.create_task(self._deliver_and_store(routed, routed.message(frame)))
            self._inflight[frame.id] = inflight
            inflight.add_done_callback(lambda _: self._inflight.pop(frame.id, None))
            self._remember(frame.id, routed)
        return inflight

    def on_received(self, connection: Connection, frame: ReceivedFrame) -> None:
        """Delete the message from every node, on behalf of its recipient, in the background."""
        if self.nodes is None:
            return
        self.spawn(self._delete(connection.user, frame.id))

    # --- internals ----------------------------------------------------------

    def _remember(self, message_id: str, routed: Routed) -> None:
        self._recent[message_id] = routed
        self._recent.move_to_end(message_id)
        while len(self._recent) > RECENT_MESSAGES:
            self._recent.popitem(last=False)

    async def _deliver_and_store(self, routed: Routed, message: Message) -> Outcome:
        if self.nodes is None:
            routed.delivered = routed.delivered or await self._deliver(message)
            return Outcome(routed.delivered, 0, 0)
        store = asyncio.create_task(
            self.nodes.store_message_in_standard_nodes(message.model_dump())
        )
        if not routed.delivered:
            routed.delivered = await self._deliver(message)
        results = await store
        stored = sum(result.ok for result in results)
        if stored < len(results):
            log.warning(
                "message stored on fewer nodes than configured",
                extra={"id": message.id, "stored": stored, "nodes": len(results)},
            )
        queue_full = any(result.outcome == QUEUE_FULL for result in results)
        return Outcome(routed.delivered, stored, len(results), queue_full)

    async def _deliver(self, message: Message) -> bool:
        sockets = [c for c in self.connections.get(message.recipientId, ()) if c.open]
        if not sockets:
            return False
        frame = MessageFrame.of(message)
        sent = await asyncio.gather(*(self._push(connection, frame) for connection in sockets))
        delivered = any(sent)
        if delivered:
            self.metrics.delivered.inc()
        return delivered

    async def _push(self, connection: Connection, frame: MessageFrame) -> bool:
        """True when the socket took the frame. A recipient that does not read must not
        hold up the sender's ack: Connection.send is bounded and closes a slow socket."""
        try:
            sent = await connection.send(frame)
        except asyncio.CancelledError:
            if cancelled_here():
                raise
            log.exception("push failed: cancelled underneath", extra={"user": connection.user})
            connection.close_slow("push failed; closing the socket")
            sent = False
        except Exception:
            log.exception("push failed", extra={"user": connection.user})
            connection.close_slow("push failed; closing the socket")
            sent = False
        if not connection.open:
            self.remove(connection)
        return sent

    async def _delete(self, recipient: str, message_id: str) -> None:
        inflight = self._inflight.get(message_id)
        if inflight is not None:
            # Delete after the store settles, or a late store would bring the message back.
            with contextlib.suppress(Exception):
                await asyncio.shield(inflight)
        assert self.nodes is not None
        # The recipient's own token: the nodes check that only the recipient deletes.
        token = self.signer.sign(recipient, ttl=DELETE_TOKEN_TTL)
        results = await self.nodes.delete_everywhere(message_id, token)
        failed = [result.node for result in results if not result.ok]
        if failed:
            log.warning(
                "delete not done on every node; replication carries it",
                extra={"id": message_id, "failed": failed},
            )

    def spawn(self, coroutine: Any) -> None:
        """A task shutdown waits for (bounded): a send up to its ack, a delete."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, within: float) -> bool:
        """Wait (bounded) for in-flight fan-outs and deletes; True when all finished."""
        self.closing = True
        pending = set(self._background)
        if not pending:
            return True
        _, still = await asyncio.wait(pending, timeout=within)
        return not still

    async def health(self) -> dict[str, Any]:
        """{"storage": "enabled" | "disabled", "standardNodes": [each node's state, as
        StandardNodes.health gives it; none without storage], "websockets": open sockets}."""
        return {
            "storage": "enabled" if self.nodes is not None else "disabled",
            "standardNodes": await self.nodes.health() if self.nodes is not None else [],
            "websockets": sum(len(sockets) for sockets in self.connections.values()),
        }

    async def close_all(self, code: int, message: bytes) -> None:
        connections = [c for sockets in self.connections.values() for c in sockets]
        await asyncio.gather(*(c.close(code, message) for c in connections), return_exceptions=True)
