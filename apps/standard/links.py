"""The replication links that pull into this node's CouchDB: read, followed, exported.

A link is one continuous pull replication, the `_replicator` document
`<prefix><database>-from-<source>` that the replication role writes on its target (this
node's CouchDB). Each look reads every link's state, the changes it has not processed yet,
and its progress counters; a `LinkTracker` remembers when each link last made progress and
tells which are stalled. The readers are pure functions of the servers' answers:

- CouchDB 3: `GET /_scheduler/docs` (state, error) and `GET /_scheduler/jobs` (the running
  job's `info`: `changes_pending`, `docs_read`, `docs_written`, `doc_write_failures`,
  `checkpointed_source_seq`, ...), both documented since 3.0.
- pouchdb-server: no scheduler and no counters; `_replication_state` in the `_replicator`
  document, and changes pending as the source's `update_seq` minus the link's checkpoint
  (the `last_seq` of `_local/<_replication_id>` on the target), both integers there.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kuno.common import replications
from kuno.common.replications import PROGRESS_COUNTERS, RUNNING_STATES

#: An expected link without its document (a state and a condition of our own).
MISSING = "missing"


@dataclass(frozen=True, order=True)
class LinkName:
    """One expected link: `database` pulled from the node `source` into the node `target`."""

    database: str
    source: str
    target: str

    def doc_id(self, prefix: str) -> str:
        return replications.replication_id(self.database, self.source, prefix)


def expected_links(node: str, peers: Iterable[str], databases: Iterable[str]) -> list[LinkName]:
    """The links that should pull into `node`: every database from every peer."""
    return [
        LinkName(database, peer, node) for database in databases for peer in peers if peer != node
    ]


@dataclass(frozen=True)
class Reading:
    """One look at one link, as its server reports it.

    `job` names the job run (a restarted link is another run); `marks` are its progress
    counters, None where the flavour has none; `changes_pending` None when it cannot be
    told, `pending_unknown` then says why; counts None where the flavour keeps none.
    """

    doc_id: str
    state: str
    job: str | None = None
    marks: tuple[Any, ...] | None = None
    changes_pending: int | None = None
    pending_unknown: str | None = None
    docs_written: int | None = None
    doc_write_failures: int | None = None
    reason: str | None = None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def read_couchdb(
    scheduler_docs: Mapping[str, Any], scheduler_jobs: Mapping[str, Any]
) -> dict[str, Reading]:
    """{document id: Reading} from CouchDB 3's `/_scheduler/docs` and `/_scheduler/jobs`.

    Only documents of the `_replicator` database count. A job's `info` (jobs) is preferred
    to the document's (docs carry the same stats since 3.0, null for states without a job).
    """
    jobs: dict[str, Mapping[str, Any]] = {}
    for job in scheduler_jobs.get("jobs") or []:
        if isinstance(job, dict) and job.get("database") == "_replicator" and job.get("doc_id"):
            jobs[job["doc_id"]] = job
    readings: dict[str, Reading] = {}
    for doc in scheduler_docs.get("docs") or []:
        if not isinstance(doc, dict) or doc.get("database") != "_replicator":
            continue
        doc_id = doc.get("doc_id")
        if not isinstance(doc_id, str):
            continue
        job = jobs.get(doc_id, {})
        info = job.get("info") if isinstance(job.get("info"), dict) else doc.get("info")
        info = info if isinstance(info, dict) else {}
        state = doc.get("state") or "unknown"
        pending = _int_or_none(info.get("changes_pending"))
        marks = None
        if any(key in info for key in PROGRESS_COUNTERS):
            marks = tuple(info.get(key) for key in PROGRESS_COUNTERS)
        readings[doc_id] = Reading(
            doc_id=doc_id,
            state=state,
            job=f"{doc.get('id')}@{job.get('start_time') or doc.get('start_time')}",
            marks=marks,
            changes_pending=pending,
            pending_unknown=None if pending is not None else f"no job statistics ({state})",
            docs_written=_int_or_none(info.get("docs_written")),
            doc_write_failures=_int_or_none(info.get("doc_write_failures")),
            reason=_error_text(info.get("error")) or _error_text(doc.get("error")),
        )
    return readings


def read_pouchdb(
    replicator_docs: Iterable[Mapping[str, Any]],
    checkpoints: Mapping[str, Any],
    source_update_seqs: Mapping[str, Any],
) -> dict[str, Reading]:
    """{document id: Reading} from pouchdb-server's `_replicator` documents.

    `checkpoints`: {document id: `last_seq` of its checkpoint on the target, or None when
    there is none yet}; `source_update_seqs`: {document id: the source database's
    `update_seq`, or an error text when it could not be read}. Changes pending are their
    difference when both are integers.
    """
    readings: dict[str, Reading] = {}
    for doc in replicator_docs:
        doc_id = doc.get("_id")
        if not isinstance(doc_id, str) or doc_id.startswith("_design/"):
            continue
        state = doc.get("_replication_state") or "unknown"
        checkpoint = _int_or_none(checkpoints.get(doc_id))
        source_seq = source_update_seqs.get(doc_id)
        pending, unknown = None, None
        if not isinstance(source_seq, int) or isinstance(source_seq, bool):
            unknown = f"source update_seq unreadable ({source_seq or 'not asked'})"
        elif doc_id in checkpoints and checkpoints[doc_id] is None:
            pending = source_seq  # no checkpoint yet: everything is still to do
        elif checkpoint is None:
            unknown = "no readable checkpoint"
        else:
            pending = max(source_seq - checkpoint, 0)
        readings[doc_id] = Reading(
            doc_id=doc_id,
            state=state,
            job=f"{doc.get('_replication_id')}@{doc.get('_replication_state_time')}",
            marks=(checkpoint,) if checkpoint is not None else None,
            changes_pending=pending,
            pending_unknown=unknown,
            reason=_error_text(doc.get("_replication_state_reason")),
        )
    return readings


@dataclass
class LinkStatus:
    """A link as the tracker sees it now: its last reading and its progress."""

    name: LinkName
    doc_id: str
    reading: Reading
    last_progress: float
    progress_age: float = 0.0
    stalled: bool = False

    @property
    def running(self) -> bool:
        return self.reading.state in RUNNING_STATES

    @property
    def condition(self) -> str:
        """`missing`, or kuno.common.replications.classify()'s condition (no settle time is
        tracked here: a running link is `settling` unless stalled)."""
        if self.reading.state == MISSING:
            return MISSING
        state = None if self.reading.state == "unknown" else self.reading.state
        return replications.classify(state, self.reading.reason, stalled=self.stalled)

    def as_json(self) -> dict[str, Any]:
        reading = self.reading
        return {
            "id": self.doc_id,
            "database": self.name.database,
            "source": self.name.source,
            "state": reading.state,
            "condition": self.condition,
            "changes_pending": reading.changes_pending,
            **({"pending_unknown": reading.pending_unknown} if reading.pending_unknown else {}),
            "progress_age_seconds": round(self.progress_age, 1),
            "stalled": self.stalled,
            **({"reason": reading.reason} if reading.reason else {}),
        }


@dataclass
class LinkTracker:
    """Follows the expected links look after look.

    Progress is a new job, a change of its progress counters, or nothing pending (a link
    that is caught up is not late). A link is stalled when it runs, has changes pending
    and made no progress for `stall_seconds`.
    """

    links: list[LinkName]
    prefix: str
    stall_seconds: float
    _status: dict[LinkName, LinkStatus] = field(default_factory=dict)

    def update(self, readings: Mapping[str, Reading], now: float | None = None) -> list[LinkStatus]:
        """Take one look (`readings` by document id; `now` monotonic seconds); the links."""
        now = time.monotonic() if now is None else now
        statuses = []
        for name in self.links:
            doc_id = name.doc_id(self.prefix)
            reading = readings.get(doc_id) or Reading(
                doc_id=doc_id, state=MISSING, pending_unknown="no replication document"
            )
            previous = self._status.get(name)
            moved = (
                previous is None
                or previous.reading.job != reading.job
                or previous.reading.marks != reading.marks
                or reading.changes_pending == 0
            )
            last_progress = now if moved or previous is None else previous.last_progress
            status = LinkStatus(name, doc_id, reading, last_progress, now - last_progress)
            status.stalled = (
                status.running
                and (reading.changes_pending or 0) > 0
                and status.progress_age >= self.stall_seconds
            )
            self._status[name] = status
            statuses.append(status)
        return statuses

    def forget(self) -> None:
        """Start afresh (CouchDB unreachable: the next look is a first look)."""
        self._status.clear()
