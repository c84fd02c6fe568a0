"""Lag and stall detection from recorded answers: CouchDB 3's `/_scheduler/docs` and
`/_scheduler/jobs` (the shapes its API reference documents for 3.x, `info` with the job's
statistics for running and pending jobs) and pouchdb-server's `_replicator` documents."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kuno.standard.links import (
    MISSING,
    LinkName,
    LinkTracker,
    expected_links,
    read_couchdb,
    read_pouchdb,
)

PREFIX = "kuno-"
STALL = 60.0
SOURCE = "http://kuno-couchdb-node2:5984/messages"
TARGET = "http://kuno-couchdb-node1:5984/messages"


def job_info(**overrides: Any) -> dict[str, Any]:
    info = {
        "changes_pending": 0,
        "checkpointed_source_seq": "60-g1AAAACTeJzLYWBgYMpgTmHgz8tPSTV0MDQy",
        "doc_write_failures": 0,
        "docs_read": 60,
        "docs_written": 60,
        "missing_revisions_found": 60,
        "revisions_checked": 60,
        "source_seq": "60-g1AAAACTeJzLYWBgYMpgTmHgz8tPSTV0MDQy",
        "through_seq": "60-g1AAAACTeJzLYWBgYMpgTmHgz8tPSTV0MDQy",
    }
    info.update(overrides)
    return info


def scheduler(state: str = "running", start: str = "2026-11-30T05:00:00Z", **info: Any):
    """(/_scheduler/docs, /_scheduler/jobs) for one link kuno-messages-from-node2 on node1."""
    rep_id = "f97a1a3ab50e07a1b9e0ac7e4dc6e0a8+continuous"
    docs = {
        "total_rows": 1,
        "offset": 0,
        "docs": [
            {
                "database": "_replicator",
                "doc_id": "kuno-messages-from-node2",
                "id": rep_id,
                "node": "nonode@nohost",
                "source": SOURCE + "/",
                "target": TARGET + "/",
                "state": state,
                "info": job_info(**info) if state in ("running", "pending") else None,
                "error_count": 0,
                "last_updated": start,
                "start_time": start,
            }
        ],
    }
    jobs: dict[str, Any] = {"total_rows": 0, "offset": 0, "jobs": []}
    if state in ("running", "pending"):
        jobs = {
            "total_rows": 1,
            "offset": 0,
            "jobs": [
                {
                    "database": "_replicator",
                    "doc_id": "kuno-messages-from-node2",
                    "id": rep_id,
                    "history": [
                        {"timestamp": start, "type": "started"},
                        {"timestamp": start, "type": "added"},
                    ],
                    "info": job_info(**info),
                    "node": "nonode@nohost",
                    "pid": "<0.1850.0>",
                    "source": SOURCE + "/",
                    "target": TARGET + "/",
                    "user": None,
                    "start_time": start,
                }
            ],
        }
    return docs, jobs


LINK = LinkName("messages", "node2", "node1")


def tracker() -> LinkTracker:
    return LinkTracker([LINK], PREFIX, STALL)


def test_the_expected_links_are_every_database_from_every_peer() -> None:
    links = expected_links("node1", ["node2", "node3"], ["messages", "users"])
    assert [link.doc_id(PREFIX) for link in links] == [
        "kuno-messages-from-node2",
        "kuno-messages-from-node3",
        "kuno-users-from-node2",
        "kuno-users-from-node3",
    ]
    assert {link.target for link in links} == {"node1"}


def test_couchdb_changes_pending_and_counts_come_from_the_job() -> None:
    docs, jobs = scheduler(changes_pending=42, docs_written=17, doc_write_failures=2)
    [reading] = read_couchdb(docs, jobs).values()
    assert reading.state == "running"
    assert reading.changes_pending == 42
    assert reading.docs_written == 17
    assert reading.doc_write_failures == 2
    assert reading.pending_unknown is None


def test_a_crashing_couchdb_link_has_no_job_and_says_why_pending_is_unknown() -> None:
    docs, jobs = scheduler("crashing")
    docs["docs"][0]["info"] = {"error": "replication_auth_error: unauthorized"}
    [reading] = read_couchdb(docs, jobs).values()
    assert reading.state == "crashing"
    assert reading.changes_pending is None
    assert reading.pending_unknown == "no job statistics (crashing)"
    assert reading.reason == "replication_auth_error: unauthorized"


def test_replications_of_other_replicator_databases_are_not_links() -> None:
    docs, jobs = scheduler()
    docs["docs"][0]["database"] = "other/_replicator"
    jobs["jobs"][0]["database"] = "other/_replicator"
    assert read_couchdb(docs, jobs) == {}


def test_a_link_without_progress_while_changes_are_pending_is_stalled() -> None:
    links = tracker()
    [status] = links.update(read_couchdb(*scheduler(changes_pending=5)), now=1000.0)
    assert not status.stalled and status.progress_age == 0
    [status] = links.update(read_couchdb(*scheduler(changes_pending=5)), now=1000.0 + STALL - 1)
    assert not status.stalled
    assert status.progress_age == STALL - 1
    [status] = links.update(read_couchdb(*scheduler(changes_pending=9)), now=1000.0 + STALL)
    assert status.stalled
    assert status.progress_age == STALL


def test_moving_counters_are_progress() -> None:
    links = tracker()
    links.update(read_couchdb(*scheduler(changes_pending=500, docs_read=60)), now=0.0)
    [status] = links.update(
        read_couchdb(*scheduler(changes_pending=400, docs_read=160)), now=STALL + 5
    )
    assert not status.stalled and status.progress_age == 0


def test_a_caught_up_link_is_never_stalled_however_quiet() -> None:
    links = tracker()
    links.update(read_couchdb(*scheduler(changes_pending=0)), now=0.0)
    [status] = links.update(read_couchdb(*scheduler(changes_pending=0)), now=10 * STALL)
    assert not status.stalled and status.progress_age == 0


def test_a_new_job_gets_a_whole_stall_window() -> None:
    links = tracker()
    links.update(read_couchdb(*scheduler(changes_pending=5)), now=0.0)
    restarted = scheduler(changes_pending=5, start="2026-11-30T06:00:00Z")
    [status] = links.update(read_couchdb(*restarted), now=STALL + 1)
    assert not status.stalled and status.progress_age == 0


@pytest.mark.parametrize("state", ["pending", "crashing", "failed"])
def test_only_a_running_link_is_stalled(state: str) -> None:
    links = tracker()
    docs, jobs = scheduler(state, changes_pending=5)
    links.update(read_couchdb(docs, jobs), now=0.0)
    [status] = links.update(read_couchdb(copy.deepcopy(docs), jobs), now=2 * STALL)
    assert not status.stalled
    assert not status.running


def test_a_link_without_document_is_missing_and_not_running() -> None:
    [status] = tracker().update({}, now=0.0)
    assert status.reading.state == MISSING
    assert not status.running and not status.stalled
    assert status.doc_id == "kuno-messages-from-node2"


def pouch_doc(state: str = "triggered", rep: str = "abc123", since: int = 1) -> dict[str, Any]:
    return {
        "_id": "kuno-messages-from-node2",
        "_rev": "3-x",
        "source": SOURCE,
        "target": TARGET,
        "continuous": True,
        "_replication_id": rep,
        "_replication_state": state,
        "_replication_state_time": since,
    }


def test_standin_changes_pending_is_the_source_update_seq_minus_the_checkpoint() -> None:
    readings = read_pouchdb(
        [pouch_doc()], {"kuno-messages-from-node2": 40}, {"kuno-messages-from-node2": 55}
    )
    reading = readings["kuno-messages-from-node2"]
    assert reading.changes_pending == 15
    assert reading.marks == (40,)
    assert reading.docs_written is None  # pouchdb-server keeps no counts


def test_standin_without_checkpoint_yet_has_everything_pending() -> None:
    readings = read_pouchdb(
        [pouch_doc()], {"kuno-messages-from-node2": None}, {"kuno-messages-from-node2": 7}
    )
    assert readings["kuno-messages-from-node2"].changes_pending == 7


def test_standin_with_an_unreadable_source_says_pending_is_unknown() -> None:
    readings = read_pouchdb(
        [pouch_doc()], {"kuno-messages-from-node2": 3}, {"kuno-messages-from-node2": "unavailable"}
    )
    reading = readings["kuno-messages-from-node2"]
    assert reading.changes_pending is None
    assert reading.pending_unknown == "source update_seq unreadable (unavailable)"


def test_standin_stall_a_checkpoint_that_does_not_move_while_the_source_grows() -> None:
    links = tracker()
    key = "kuno-messages-from-node2"
    links.update(read_pouchdb([pouch_doc()], {key: 40}, {key: 41}), now=0.0)
    [status] = links.update(read_pouchdb([pouch_doc()], {key: 40}, {key: 90}), now=STALL)
    assert status.stalled
    [status] = links.update(read_pouchdb([pouch_doc()], {key: 90}, {key: 90}), now=STALL + 1)
    assert not status.stalled and status.progress_age == 0


def test_conditions_are_the_common_classification() -> None:
    docs, jobs = scheduler("pending", changes_pending=3)
    docs["docs"][0]["info"]["error"] = "changes_reader_died"  # pending after a crash
    jobs["jobs"][0]["info"]["error"] = "changes_reader_died"
    [status] = tracker().update(read_couchdb(docs, jobs), now=0.0)
    assert status.condition == "failed"
    [status] = tracker().update(read_couchdb(*scheduler()), now=0.0)
    assert status.condition == "settling"  # running: no settle time is tracked here
    [status] = tracker().update({}, now=0.0)
    assert status.condition == MISSING
