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
    outcome: str  # stored | duplicate | failed (store); deleted | absent | failed (delete)


class StandardNodes:
    """All N standard nodes, reached through one shared client session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: list[str],
        token: ServiceToken,
        timeout: float,
        metrics: FanoutMetrics,
    ) -> None:
        self.session = session
        self.urls = [url.rstrip("/") for url in urls]
        self.labels = [redact_url(url) for url in self.urls]
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.metrics = metrics

    def __len__(self) -> int:
        return len(self.urls)

    async def store_message_in_standard_nodes(self, document: dict[str, Any]) -> list[NodeResult]:
        """POST the identical document to every node at once; each gets `timeout` at most."""
        started = time.perf_counter()
        headers = {**self.token.header(), "Content-Type": "application/json"}
        body = json.dumps(document, separators=(",", ":")).encode()  # once, for every node
        results = await asyncio.gather(
            *(self._store(url, label, body, headers) for url, label in self._nodes())
        )
        self.metrics.latency.observe(time.perf_counter() - started)
        return list(results)

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

    async def _store(
        self, url: str, label: str, body: bytes, headers: dict[str, str]
    ) -> NodeResult:
        outcome = "failed"
        try:
            async with self.session.post(
                f"{url}/messages", data=body, headers=headers, timeout=self.timeout
            ) as response:
                await response.read()
                if response.status == 201:
                    outcome = "stored"
                elif response.status == 200:
                    outcome = "duplicate"
                else:
                    log.warning(
                        "node refused a message", extra={"node": label, "status": response.status}
                    )
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("node unreachable", extra={"node": label, "cause": type(exc).__name__})
        self.metrics.stored.labels(label, outcome).inc()
        return NodeResult(label, outcome != "failed", outcome)

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
