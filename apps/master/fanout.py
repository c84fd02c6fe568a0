"""Store each message on every standard node in parallel; delete it from every node."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram

from kuno.common.batching import NaturalBatcher
from kuno.common.couch import redact_url
from kuno.common.tokens import STORE_SCOPE, TokenSigner

log = logging.getLogger("kuno.master.fanout")

SERVICE_SUBJECT = "master"
SERVICE_TOKEN_TTL = 300.0
# Re-sign the service token when less than this part of its lifetime is left.
RENEW_FRACTION = 0.5


class FanoutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stored = Counter(
            "kuno_master_node_stores",
            "Store calls per standard node, by outcome (stored, duplicate, failed)",
            ["node", "outcome"],
            registry=registry,
        )
        self.deleted = Counter(
            "kuno_master_node_deletes",
            "Delete calls per standard node, by outcome (deleted, absent, failed)",
            ["node", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "kuno_master_fanout_seconds",
            "Time for a storage fan-out to settle on every node",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
            registry=registry,
        )
        self.batch_size = Histogram(
            "kuno_master_store_batch_size",
            "Messages per batch request to a standard node",
            ["node"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )


class ServiceToken:
    """The master's own token (scope "store"), re-signed before it expires."""

    def __init__(self, signer: TokenSigner, ttl: float = SERVICE_TOKEN_TTL) -> None:
        self._signer = signer
        self._ttl = ttl
        self._token = ""
        self._renew_at = 0.0

    def header(self) -> dict[str, str]:
        now = time.monotonic()
        if now >= self._renew_at:
            self._token = self._signer.sign(SERVICE_SUBJECT, scopes=(STORE_SCOPE,), ttl=self._ttl)
            self._renew_at = now + self._ttl * RENEW_FRACTION
        return {"Authorization": f"Bearer {self._token}"}


@dataclass(frozen=True)
class NodeResult:
    node: str
    ok: bool
    # stored | duplicate | queue_full | failed (store); deleted | absent | failed (delete)
    outcome: str


@dataclass(frozen=True)
class BatchLimits:
    """How the master groups stores for one node: at most `messages` and `bytes` per
    request, at most `in_flight` requests at once."""

    messages: int = 100
    bytes: int = 1024 * 1024
    in_flight: int = 2


@dataclass(frozen=True)
class _Store:
    id: str
    body: bytes  # the document's JSON, the same bytes for every node
    deadline: float  # loop time; after it the message counts as failed on this node


class NodeWriter:
    """One standard node's stores, coalesced by a NaturalBatcher: while `in_flight` batch
    requests are out, new messages queue and leave together as the next batch. No added
    delay when the node keeps up, bigger batches when it does not. Each message waits
    `timeout` at most."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        label: str,
        token: ServiceToken,
        timeout: float,
        limits: BatchLimits,
        metrics: FanoutMetrics,
    ) -> None:
        self.session = session
        self.url = f"{url}/messages/batch"
        self.single_url = f"{url}/messages"
        self._without_batch_route = False  # logged once
        self.label = label
        self.token = token
        self.timeout = timeout
        self.limits = limits
        self.metrics = metrics
        self._batcher: NaturalBatcher[_Store, str] = NaturalBatcher(
            self._send, max_items=limits.messages, in_flight=limits.in_flight, fits=self._fits
        )

    async def store(self, message_id: str, body: bytes) -> NodeResult:
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            # Past the deadline the caller stops waiting: a message not sent yet never
            # will be, one sent has its late answer ignored.
            async with asyncio.timeout_at(deadline):
                outcome = await self._batcher.submit(_Store(message_id, body, deadline))
        except TimeoutError:
            log.warning("node timed out", extra={"node": self.label, "id": message_id})
            outcome = "failed"
        except Exception:
            log.exception("store failed", extra={"node": self.label, "id": message_id})
            outcome = "failed"
        self.metrics.stored.labels(self.label, outcome).inc()
        return NodeResult(self.label, outcome in ("stored", "duplicate"), outcome)

    async def close(self) -> None:
        await self._batcher.close()

    def _fits(self, batch: list[_Store], store: _Store) -> bool:
        """Within the byte limit, and each id once (a node refuses a batch with an id twice)."""
        size = sum(len(queued.body) + 1 for queued in batch)
        return size + len(store.body) <= self.limits.bytes and all(
            queued.id != store.id for queued in batch
        )

    async def _send(self, batch: list[_Store]) -> list[str]:
        """Each message's outcome, in order: stored, duplicate or failed."""
        self.metrics.batch_size.labels(self.label).observe(len(batch))
        # Bounded by the newest message's deadline: no message fails early because of an
        # older one; the older ones stop waiting at their own deadlines.
        within = max(0.001, batch[-1].deadline - asyncio.get_running_loop().time())
        outcomes = await self._post(batch, within)
        if outcomes is None and len(batch) > 1:
            # The node refused the batch (400/413): one message must not fail the others,
            # so each goes alone and only the bad one fails.
            alone = await asyncio.gather(*(self._send([store]) for store in batch))
            return [outcome for [outcome] in alone]
        return [(outcomes or {}).get(store.id, "failed") for store in batch]

    async def _post(self, batch: list[_Store], within: float) -> dict[str, str] | None:
        """Each message's outcome by id ({} when unreachable), None when refused as bad."""
        body = b'{"messages":[' + b",".join(queued.body for queued in batch) + b"]}"
        headers = {**self.token.header(), "Content-Type": "application/json"}
        try:
            async with self.session.post(
                self.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=within)
            ) as response:
                if response.status == 200:
                    answer = await response.json()
                    return {result["id"]: _outcome(result) for result in answer.get("results", [])}
                await response.read()
                status = response.status
            if status in (404, 405):
                # A node of a release before the batch route (during a rollback, the
                # nodes go back first): each message goes to its POST /messages.
                if not self._without_batch_route:
                    self._without_batch_route = True
                    log.warning("node without batch route: one by one", extra={"node": self.label})
                return await self._post_one_by_one(batch, headers, within)
            log.warning(
                "node refused a batch",
                extra={"node": self.label, "status": status, "size": len(batch)},
            )
            return None if status in (400, 413) else {}
        except (
            TimeoutError,
            aiohttp.ClientError,
            ValueError,
            LookupError,
            TypeError,
            AttributeError,
        ) as exc:
            log.warning("node unreachable", extra={"node": self.label, "cause": type(exc).__name__})
            return {}

    async def _post_one_by_one(
        self, batch: list[_Store], headers: dict[str, str], within: float
    ) -> dict[str, str]:
        async def post(store: _Store) -> str:
            try:
                async with self.session.post(
                    self.single_url,
                    data=store.body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=within),
                ) as response:
                    await response.read()
                    return _SINGLE_OUTCOMES.get(response.status, "failed")
            except (TimeoutError, aiohttp.ClientError):
                return "failed"

        outcomes = await asyncio.gather(*(post(store) for store in batch))
        return {store.id: outcome for store, outcome in zip(batch, outcomes, strict=True)}


# POST /messages: 201 stored, 200 already there.
_SINGLE_OUTCOMES = {201: "stored", 200: "duplicate", 507: "queue_full"}
#: A node's outcome for a new message over its recipient's queue bounds.
QUEUE_FULL = "queue_full"


def _outcome(result: dict[str, Any]) -> str:
    if not result.get("stored"):
        return QUEUE_FULL if result.get("error") == QUEUE_FULL else "failed"
    return "stored" if result.get("created") else "duplicate"


class StandardNodes:
    """All N standard nodes, reached through one shared client session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: list[str],
        token: ServiceToken,
        timeout: float,
        metrics: FanoutMetrics,
        limits: BatchLimits | None = None,
    ) -> None:
        self.session = session
        self.urls = [url.rstrip("/") for url in urls]
        self.labels = [redact_url(url) for url in self.urls]
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.metrics = metrics
        self.writers = [
            NodeWriter(session, url, label, token, timeout, limits or BatchLimits(), metrics)
            for url, label in self._nodes()
        ]

    def __len__(self) -> int:
        return len(self.urls)

    async def store_message_in_standard_nodes(self, document: dict[str, Any]) -> list[NodeResult]:
        """The identical document to every node at once (coalesced into each node's next
        batch); each node gets `timeout` at most."""
        started = time.perf_counter()
        body = json.dumps(document, separators=(",", ":")).encode()  # once, for every node
        results = await asyncio.gather(
            *(writer.store(document["id"], body) for writer in self.writers)
        )
        self.metrics.latency.observe(time.perf_counter() - started)
        return list(results)

    async def close(self) -> None:
        await asyncio.gather(*(writer.close() for writer in self.writers))

    async def delete_everywhere(self, message_id: str, bearer: str) -> list[NodeResult]:
        """DELETE the message on every node with the recipient's token; 404 counts as done."""
        headers = {"Authorization": f"Bearer {bearer}"}
        return list(
            await asyncio.gather(
                *(self._delete(url, label, message_id, headers) for url, label in self._nodes())
            )
        )

    async def health(self) -> list[dict[str, Any]]:
        async def one(url: str, label: str) -> dict[str, Any]:
            try:
                async with self.session.get(f"{url}/health", timeout=self.timeout) as response:
                    body = await response.json(content_type=None)
                    status = body.get("status", "unknown") if isinstance(body, dict) else "unknown"
                    return {"url": label, "reachable": True, "status": status}
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                return {"url": label, "reachable": False, "reason": type(exc).__name__}

        return list(await asyncio.gather(*(one(url, label) for url, label in self._nodes())))

    def _nodes(self) -> list[tuple[str, str]]:
        return list(zip(self.urls, self.labels, strict=True))

    async def _delete(
        self, url: str, label: str, message_id: str, headers: dict[str, str]
    ) -> NodeResult:
        outcome = "failed"
        try:
            async with self.session.delete(
                f"{url}/messages/{quote(message_id, safe='')}",
                headers=headers,
                timeout=self.timeout,
            ) as response:
                await response.read()
                if response.status == 200:
                    outcome = "deleted"
                elif response.status == 404:
                    outcome = "absent"
                else:
                    log.warning(
                        "node refused a delete", extra={"node": label, "status": response.status}
                    )
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("node unreachable", extra={"node": label, "cause": type(exc).__name__})
        self.metrics.deleted.labels(label, outcome).inc()
        return NodeResult(label, outcome != "failed", outcome)
