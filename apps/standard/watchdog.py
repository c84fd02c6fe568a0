"""The stalled-link watchdog: a link that runs, has changes pending and made no progress
for KUNO_REPLICATION_STALL_SECONDS is restarted as heal.yml restarts it, as a new job.

The restart is the documented one of CouchDB 3 (and the one library/couchdb_replication_job.py
makes): delete the `_replicator` document and write it again without its server fields, so
the scheduler starts a new job on new connections, without the old one's back-off. The same
holds on the project's pouchdb-server image (images/pouchdb-server/docker-entrypoint.js, 8.).
It never fights an operator: it only touches the links this node expects (our id prefix), a
link whose document is gone (removed by hand) or changed meanwhile (409) is left alone, and a
restarted link gets a whole stall window again before the next restart.
KUNO_REPLICATION_WATCHDOG=false turns it off; the links are still watched and exported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter

from kuno.common import couch
from kuno.standard.links import LinkName, LinkStatus

log = logging.getLogger("kuno.standard.watchdog")

# Written by the server into a _replicator document (pouchdb-server; CouchDB 1.x/2.0
# style), never part of what we write again.
SERVER_FIELDS = (
    "_rev",
    "_replication_state",
    "_replication_state_time",
    "_replication_state_reason",
    "_replication_id",
    "_replication_stats",
)


class Watchdog:
    """Restarts stalled links (`check(statuses)` after each look)."""

    def __init__(
        self, client: couch.CouchClient, registry: CollectorRegistry, stall_seconds: float
    ) -> None:
        self.client = client
        self.stall_seconds = stall_seconds
        self.restarts = Counter(
            "kuno_replication_watchdog_restarts",
            "Stalled links the watchdog restarted or failed to restart",
            ["database", "source", "target", "outcome"],
            registry=registry,
        )
        # The job each stalled link was last handled in, and when (monotonic seconds): one
        # attempt, one log line per stall window.
        self._handled: dict[LinkName, tuple[str | None, float]] = {}

    async def check(
        self, statuses: Iterable[LinkStatus], flavour: str, now: float | None = None
    ) -> list[str]:
        """Restart every stalled link not yet handled in this stall window; the ids
        restarted. `flavour`: couch.flavour() of the server; `now`: monotonic seconds."""
        now = time.monotonic() if now is None else now
        restarted = []
        for status in statuses:
            if not status.stalled:
                self._handled.pop(status.name, None)
                continue
            job, at = self._handled.get(status.name, (None, None))
            if at is not None and job == status.reading.job and now - at < self.stall_seconds:
                continue  # handled in this window: a failed attempt is tried again after it
            self._handled[status.name] = (status.reading.job, now)
            outcome = await self._restart(status)
            labels = (status.name.database, status.name.source, status.name.target)
            if outcome is None:
                continue
            self.restarts.labels(*labels, outcome).inc()
            if outcome == "restarted":
                restarted.append(status.doc_id)
        return restarted

    async def _restart(self, status: LinkStatus) -> str | None:
        """restarted, failed, or None (left alone: the operator's move)."""
        path = "/_replicator/" + quote(status.doc_id, safe="")
        extra = _describe(status)
        try:
            doc = await self.client.get("_replicator", status.doc_id)
            await self.client.request("DELETE", path, params={"rev": doc["_rev"]})
        except (couch.NotFound, couch.Conflict):
            log.info("stalled replication changed meanwhile; left alone", extra=extra)
            return None
        except couch.CouchError as exc:
            log.warning("stalled replication not restarted", extra=extra | {"cause": exc.error})
            return "failed"
        body = {key: value for key, value in doc.items() if key not in SERVER_FIELDS}
        try:
            await self.client.request("PUT", path, json=body)
        except couch.Conflict:
            pass  # written again meanwhile (an operator, a deploy): that is a new job too
        except couch.CouchError as exc:
            # Deleted but not written again: heal.yml / deploy.yml write it; say so loudly.
            log.error(
                "stalled replication deleted but not written again; run heal.yml",
                extra=extra | {"cause": exc.error},
            )
            return "failed"
        log.warning("stalled replication restarted", extra=extra)
        return "restarted"


def _describe(status: LinkStatus) -> dict[str, Any]:
    return {
        "replication": status.doc_id,
        "changes_pending": status.reading.changes_pending,
        "seconds_without_progress": round(status.progress_age, 1),
    }
