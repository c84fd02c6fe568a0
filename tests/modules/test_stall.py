"""couchdb_replication_info's stall test, without a server: recorded CouchDB 3 and
pouchdb-server answers (tests/modules/recorded/) fed to its pure functions.

The recordings follow CouchDB 3's documented shapes (/_scheduler/docs with the job's
progress counters in `info`, `_changes?descending=true&style=all_docs`, `_revs_diff`) and
what pouchdb-server 4.2 writes into a _replicator document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kuno.common import replications as package
from tests.modules.helpers import MODULE_UTILS, load_library

info = load_library("couchdb_replication_info")

RECORDED = Path(__file__).resolve().parent / "recorded"
PULL = "kuno-messages-from-node2"


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


def couchdb_look(listing: str, missing: dict[str, list[str]] | None) -> dict[str, Any]:
    """A look at the pull from node2 as the module takes it from /_scheduler/docs."""
    doc = next(d for d in recorded(listing)["docs"] if d["doc_id"] == PULL)
    return info.scheduler_sample(doc) | {"missing": missing}


def lacked() -> dict[str, list[str]]:
    """What node1 lacked of node2's newest changes (a _changes answer, then _revs_diff)."""
    wanted = info.newest_revisions(recorded("couchdb3_changes_descending.json"))
    missing = info.missing_revisions(recorded("couchdb3_revs_diff_missing.json"))
    assert set(missing) <= set(wanted)
    return missing


def test_the_newest_changes_become_a_revs_diff_request_with_every_leaf():
    wanted = info.newest_revisions(recorded("couchdb3_changes_descending.json"))
    assert wanted == {
        "5d7d1c9e-6f0b-4b8e-9a57-1f2a3b4c5d6e": ["1-967a00dff5e02add41819138abb3284d"],
        "0b6a8b0e-2f3c-4d5e-8f90-a1b2c3d4e5f6": ["2-7051cbe5c8faecd085a3fa619e6e6337"],
        # a document in conflict: both leaves
        "e3f1a2b3-c4d5-4e6f-8a9b-0c1d2e3f4a5b": [
            "1-cb6b2a3f1b0f4ff4c0a3c43b4f8a7e21",
            "1-4c6114c65e295552ab1019e2b046b10e",
        ],
    }
    assert info.newest_revisions({"results": [{"seq": 1}, "junk"]}) == {}
    assert info.missing_revisions({"a": {"missing": []}, "b": {}}) == {}


def test_couchdb3_a_running_job_that_does_not_move_while_changes_are_missing_is_stalled():
    """The partition case: `running`, counters frozen 25 s apart, the same revisions lacking."""
    before = couchdb_look("couchdb3_scheduler_docs_stalled.json", lacked())
    after = couchdb_look("couchdb3_scheduler_docs_stalled_later.json", lacked())
    assert before["state"] == after["state"] == "running"
    assert info.assess_stall(before, after) is True


def test_couchdb3_a_job_working_through_a_backlog_is_not_stalled():
    before = couchdb_look("couchdb3_scheduler_docs_stalled.json", lacked())
    after = couchdb_look("couchdb3_scheduler_docs_progressing.json", lacked())
    assert before["marks"] != after["marks"]
    assert info.assess_stall(before, after) is False


def test_couchdb3_a_job_started_again_meanwhile_gets_its_chance():
    before = couchdb_look("couchdb3_scheduler_docs_stalled.json", lacked())
    after = couchdb_look("couchdb3_scheduler_docs_restarted.json", lacked())
    assert info.assess_stall(before, after) is False


def test_couchdb3_the_missing_changes_arrived_within_the_window():
    before = couchdb_look("couchdb3_scheduler_docs_stalled.json", lacked())
    after = couchdb_look("couchdb3_scheduler_docs_stalled_later.json", {})
    assert info.assess_stall(before, after) is False
    # Only a revision lacking at both looks counts, not one that is new at the second.
    other = {"5d7d1c9e-6f0b-4b8e-9a57-1f2a3b4c5d6e": ["2-0000"]}
    after = couchdb_look("couchdb3_scheduler_docs_stalled_later.json", other)
    assert info.assess_stall(before, after) is False


def test_couchdb3_nothing_missing_is_not_stalled_and_unknown_is_unknown():
    before = couchdb_look("couchdb3_scheduler_docs_stalled.json", {})
    after = couchdb_look("couchdb3_scheduler_docs_stalled_later.json", {})
    assert info.assess_stall(before, after) is False
    before = couchdb_look("couchdb3_scheduler_docs_stalled.json", None)
    assert info.assess_stall(before, after) is None


def test_couchdb3_a_crashing_job_is_failing_not_stalled():
    listing = recorded("couchdb3_scheduler_docs_stalled_later.json")
    doc = next(d for d in listing["docs"] if d["doc_id"] != PULL)
    look = info.scheduler_sample(doc) | {"missing": lacked()}
    assert look["state"] == "pending"
    assert info.assess_stall(look, look) is None
    assert info.condition({"state": "pending", "reason": "changes_reader_died"}) == "failed"
    assert info.condition({"state": "crashing", "reason": "x"}) == "failed"
    assert info.condition({"state": "pending", "reason": None}) == "waiting"


@pytest.mark.parametrize(
    ("replication", "expected"),
    [
        ({"state": "running", "stalled": True}, "stalled"),
        ({"state": "running", "running_for": 10.0, "stalled": False}, "running"),
        ({"state": "running", "running_for": 60.0, "stalled": None}, "running"),
        # Running, but not for the settle time yet (or no time to tell): not yet running.
        ({"state": "running", "running_for": 2.4, "stalled": None}, "settling"),
        ({"state": "running", "stalled": None}, "settling"),
        ({"state": "triggered", "stalled": True}, "stalled"),
        ({"state": "error", "stalled": None}, "failed"),
        # An error in the job info of a running job: failed, as settle_replication says.
        ({"state": "running", "reason": "x", "running_for": 60.0, "stalled": None}, "failed"),
        ({"state": "completed", "stalled": None}, "completed"),
        ({"state": None, "stalled": None}, "waiting"),
    ],
)
def test_condition(replication: dict[str, Any], expected: str):
    assert info.condition(replication) == expected


def test_stand_in_a_triggered_pull_that_does_not_carry_a_missing_change_is_stalled():
    """pouchdb-server has no counters: the missing revisions alone decide."""
    doc = recorded("pouchdb_replicator_doc_triggered.json")
    missing = info.newest_revisions(recorded("pouchdb_changes_descending.json"))
    before = info.replicator_doc_sample(doc) | {"missing": missing}
    assert before["marks"] is None
    assert info.assess_stall(before, before | {"missing": dict(missing)}) is True
    assert info.assess_stall(before, before | {"missing": {}}) is False
    # Started again (heal, or the server after an error): a new _replication_id.
    restarted = info.replicator_doc_sample(doc | {"_replication_id": "another"})
    assert info.assess_stall(before, restarted | {"missing": missing}) is False


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("failed", True),
        # A new job on either flavour (pouchdb-server: its image's entrypoint, 8.).
        ("stalled", True),
        ("running", False),
        ("waiting", False),
        ("settling", False),
        ("completed", False),
    ],
)
def test_which_conditions_heal_restarts(condition: str, expected: bool):
    assert info.needs_restart(condition) is expected


def test_the_package_and_the_modules_read_one_file_of_replication_states():
    """kuno.common.replications (the standard node's /health) and ansible.module_utils.replications
    (the modules) are the same file: module_utils/replications.py links to it."""
    assert (MODULE_UTILS / "replications.py").resolve() == Path(package.__file__).resolve()


@pytest.mark.parametrize(
    ("state", "failed"),
    [
        # CouchDB 3's documented states (/_scheduler/docs), then pouchdb-server's.
        ("initializing", False),
        ("pending", False),
        ("running", False),
        ("crashing", True),
        ("failed", True),
        ("error", True),
        ("completed", False),
        ("triggered", False),
        (None, False),
    ],
)
def test_which_states_have_failed(state: str | None, failed: bool):
    """The reading /health makes of a bare state: only crashing, failed, error have failed."""
    assert package.is_failed(state) is failed


def test_replication_ids():
    assert package.replication_id("messages", "node2") == "kuno-messages-from-node2"
    assert package.pull_ids(["messages", "users"], ["node2", "node3"], "x-") == [
        "x-messages-from-node2",
        "x-messages-from-node3",
        "x-users-from-node2",
        "x-users-from-node3",
    ]
