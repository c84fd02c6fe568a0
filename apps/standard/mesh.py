"""This node's part of the replication mesh: looks at its links every poll interval,
exports them as metrics and answers /health's `links` and `mesh`.

See kuno.standard.links for what a link is and how each flavour is read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from yarl import URL

from kuno.common import couch, replications
from kuno.standard.links import (
    MISSING,
    LinkName,
    LinkStatus,
    LinkTracker,
    Reading,
    read_couchdb,
    read_pouchdb,
)

log = logging.getLogger("kuno.standard.mesh")

LINK_LABELS = ("database", "source", "target")


@dataclass
class MeshView:
    """The last look: whether CouchDB answered, its flavour, every expected link, and the
    document counts of the replicated databases."""

    couchdb_up: bool = False
    flavour: str = "unknown"
    links: list[LinkStatus] = field(default_factory=list)
    documents: dict[str, tuple[int, int]] = field(default_factory=dict)
    error: str | None = None


class MeshMonitor:
    """Looks at this node's links (`look()`), keeps the last view, feeds the watchdog.

    `nodes`: N, this node and its peers; `links`: the expected links into this node.
    """

    def __init__(
        self,
        client: couch.CouchClient,
        session: aiohttp.ClientSession,
        node: str,
        nodes: int,
        links: list[LinkName],
        databases: list[str],
        id_prefix: str,
        stall_seconds: float,
        timeout: float,
    ) -> None:
        self.client = client
        self.session = session
        self.node = node
        self.nodes = nodes
        self.databases = databases
        self.tracker = LinkTracker(links, id_prefix, stall_seconds)
        self.timeout = timeout
        self.view = MeshView()

    @property
    def expected(self) -> list[LinkName]:
        return self.tracker.links

    async def look(self) -> MeshView:
        """Read every link once and remember the view; CouchDB errors make a view with
        `couchdb_up` False (the links keep their last progress)."""
        try:
            info = await self.client.server_info()
            flavour = couch.flavour(info)
            if flavour == "pouchdb-server":
                readings = await self._read_pouchdb(info.get("uuid"))
            else:
                readings = read_couchdb(
                    await couch.scheduler_listing(self.client, "docs"),
                    await couch.scheduler_listing(self.client, "jobs"),
                )
            documents = await self._documents()
        except couch.CouchError as exc:
            self.view = MeshView(couchdb_up=False, links=self.view.links, error=exc.error)
            return self.view
        self.view = MeshView(
            couchdb_up=True,
            flavour=flavour,
            links=self.tracker.update(readings),
            documents=documents,
        )
        return self.view

    async def _documents(self) -> dict[str, tuple[int, int]]:
        counts = {}
        for database in self.databases:
            try:
                info = await self.client.request("GET", "/" + quote(database, safe=""))
            except couch.NotFound:
                continue
            counts[database] = (int(info.get("doc_count", 0)), int(info.get("doc_del_count", 0)))
        return counts

    async def _read_pouchdb(self, server_uuid: Any) -> dict[str, Reading]:
        try:
            listing = await self.client.request(
                "GET", "/_replicator/_all_docs", params={"include_docs": "true"}
            )
        except couch.NotFound:
            return {}
        docs = [row["doc"] for row in listing.get("rows", []) if row.get("doc")]
        wanted = {name.doc_id(self.tracker.prefix) for name in self.expected}
        ours = [doc for doc in docs if doc.get("_id") in wanted]
        looks = await asyncio.gather(*(self._pouchdb_progress(doc, server_uuid) for doc in ours))
        checkpoints, seqs = {}, {}
        for doc, (checkpoint, seq) in zip(ours, looks, strict=True):
            if checkpoint is not _UNREADABLE:
                checkpoints[doc["_id"]] = checkpoint
            seqs[doc["_id"]] = seq
        return read_pouchdb(docs, checkpoints, seqs)

    async def _pouchdb_progress(self, doc: Mapping[str, Any], target_uuid: Any) -> tuple[Any, Any]:
        """(the checkpoint's last_seq on the target, None when there is none yet, or
        _UNREADABLE; the source's update_seq, or the reason it could not be read).

        PouchDB names a replication's checkpoint `_local/<md5>`, the md5 (base64, `/` as
        `.`, `+` as `_`) of the source's and the target's ids, each the server's `uuid`
        followed by the database name (pouchdb-generate-replication-id, for a replication
        without filter, selector or doc_ids)."""
        if any(doc.get(key) for key in ("filter", "selector", "doc_ids", "query_params")):
            return _UNREADABLE, "a filtered replication's checkpoint id is not computed here"
        try:
            source, source_db = endpoint_client(self.session, doc.get("source"), self.timeout)
            source_uuid = (await source.server_info()).get("uuid")
            seq: Any = (await source.request("GET", "/" + quote(source_db, safe=""))).get(
                "update_seq"
            )
        except ValueError as exc:
            return _UNREADABLE, str(exc)
        except couch.CouchError as exc:
            return _UNREADABLE, exc.error
        target = _endpoint_url(doc.get("target"))
        if not isinstance(source_uuid, str) or not isinstance(target_uuid, str) or not target:
            return _UNREADABLE, seq
        target_db = URL(target).path.strip("/")
        checkpoint_id = pouchdb_checkpoint_id(source_uuid + source_db, target_uuid + target_db)
        try:
            local = await self.client.request(
                "GET", f"/{quote(target_db, safe='')}/{quote(checkpoint_id, safe='/')}"
            )
        except couch.NotFound:
            return None, seq
        except couch.CouchError:
            return _UNREADABLE, seq
        return local.get("last_seq"), seq


_UNREADABLE = object()


def pouchdb_checkpoint_id(source_id: str, target_id: str) -> str:
    """The `_local` document id of a PouchDB replication's checkpoint."""
    digest = base64.b64encode(hashlib.md5((source_id + target_id).encode()).digest())  # noqa: S324 - PouchDB's own naming, not security
    return "_local/" + digest.decode().replace("/", ".").replace("+", "_")


def _endpoint_url(endpoint: Any) -> str | None:
    url = endpoint.get("url") if isinstance(endpoint, dict) else endpoint
    return url if isinstance(url, str) else None


def endpoint_client(
    session: aiohttp.ClientSession, endpoint: Any, timeout: float
) -> tuple[couch.CouchClient, str]:
    """(a client of the server of a replication endpoint, the database name), with the
    credentials the document gives it: in the URL, `auth.basic`, or an `Authorization:
    Basic` header. Raises ValueError for an endpoint it cannot read."""
    url = _endpoint_url(endpoint)
    if url is None:
        raise ValueError("no endpoint url")
    parsed = URL(url.rstrip("/"))
    database = parsed.path.rsplit("/", 1)[-1]
    if not database:
        raise ValueError("no database in the endpoint url")
    user = password = None
    if isinstance(endpoint, dict):
        basic = (endpoint.get("auth") or {}).get("basic") or {}
        header = (endpoint.get("headers") or {}).get("Authorization", "")
        if basic.get("username"):
            user, password = basic["username"], basic.get("password", "")
        elif isinstance(header, str) and header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise ValueError("unreadable Authorization header") from None
    server = str(parsed.with_path(parsed.path.rsplit("/", 1)[0] or "/"))
    client = couch.CouchClient(session, server, user, password, timeout=timeout)
    return client, database


class MeshCollector(Collector):
    """The last view as metrics, produced at each scrape (only the links' present series:
    a state the link left is not exported as 0)."""

    def __init__(self, monitor: MeshMonitor, watchdog_enabled: bool) -> None:
        self.monitor = monitor
        self.watchdog_enabled = watchdog_enabled

    def collect(self) -> Iterator[Any]:
        monitor, view = self.monitor, self.monitor.view
        state = GaugeMetricFamily(
            "kuno_replication_link_state",
            "1 for the link's current state (CouchDB scheduler, pouchdb-server, missing)",
            labels=[*LINK_LABELS, "state"],
        )
        running = _link_gauge("running", "1 when the link runs, else 0 (also when missing)")
        pending = _link_gauge("changes_pending", "Changes of the source not yet processed")
        age = _link_gauge(
            "progress_age_seconds", "Seconds since the link last made progress (0: caught up)"
        )
        stalled = _link_gauge("stalled", "1 when running, changes pending, no progress")
        written = CounterMetricFamily(
            "kuno_replication_link_documents_written",
            "Documents the link's job wrote (CouchDB 3 docs_written)",
            labels=list(LINK_LABELS),
        )
        failed = CounterMetricFamily(
            "kuno_replication_link_document_write_failures",
            "Documents the link's job failed to write (CouchDB 3 doc_write_failures)",
            labels=list(LINK_LABELS),
        )
        for link in view.links:
            labels = [link.name.database, link.name.source, link.name.target]
            reading = link.reading
            state.add_metric([*labels, reading.state], 1)
            running.add_metric(labels, 1 if link.running else 0)
            stalled.add_metric(labels, 1 if link.stalled else 0)
            age.add_metric(labels, link.progress_age)
            if reading.changes_pending is not None:
                pending.add_metric(labels, reading.changes_pending)
            if reading.docs_written is not None:
                written.add_metric(labels, reading.docs_written)
            if reading.doc_write_failures is not None:
                failed.add_metric(labels, reading.doc_write_failures)
        yield from (state, running, pending, age, stalled, written, failed)
        expected = GaugeMetricFamily(
            "kuno_replication_links_expected",
            "Links that should pull into this node (databases x peers)",
            labels=["target"],
        )
        expected.add_metric([monitor.node], len(monitor.expected))
        yield expected
        yield GaugeMetricFamily("kuno_mesh_nodes", "N: this node and its peers", monitor.nodes)
        yield GaugeMetricFamily(
            "kuno_replication_watchdog_enabled",
            "1 when the stalled-link watchdog may restart links",
            1 if self.watchdog_enabled else 0,
        )
        yield GaugeMetricFamily(
            "kuno_couchdb_up", "1 when the last look at CouchDB succeeded", int(view.couchdb_up)
        )
        documents = GaugeMetricFamily(
            "kuno_couchdb_database_documents", "Documents (doc_count)", labels=["database"]
        )
        deleted = GaugeMetricFamily(
            "kuno_couchdb_database_deleted_documents",
            "Tombstones (doc_del_count)",
            labels=["database"],
        )
        for database, (count, tombstones) in sorted(view.documents.items()):
            documents.add_metric([database], count)
            deleted.add_metric([database], tombstones)
        yield documents
        yield deleted


def _link_gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        f"kuno_replication_link_{name}", documentation, labels=list(LINK_LABELS)
    )


def health_links(monitor: MeshMonitor) -> dict[str, Any]:
    """/health's account of this node's links: expected, running, and the ones that are
    missing, not running or stalled, by document id."""
    links = monitor.view.links
    return {
        "expected": len(monitor.expected),
        "running": sum(link.running for link in links),
        "missing": [link.doc_id for link in links if link.reading.state == MISSING],
        "not_running": [
            link.doc_id for link in links if not link.running and link.reading.state != MISSING
        ],
        "stalled": [link.doc_id for link in links if link.stalled],
        "links": [link.as_json() for link in links],
    }


def links_failing(monitor: MeshMonitor) -> bool:
    """Whether a link into this node is missing, failed or stalled."""
    trouble = (MISSING, replications.FAILED, replications.STALLED)
    return any(link.condition in trouble for link in monitor.view.links)


def register_metrics(registry: CollectorRegistry, monitor: MeshMonitor, watchdog: bool) -> None:
    registry.register(MeshCollector(monitor, watchdog))
