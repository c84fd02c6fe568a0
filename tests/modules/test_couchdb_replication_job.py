"""couchdb_replication_job against real pouchdb-server processes: a failed job is restarted,
a running one left alone; check mode, diff, no credential in the output."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.modules.conftest import add_admin
from tests.modules.helpers import Ansible, load_library
from tests.modules.test_couchdb_replication import (
    alive,
    arrives,
    pull,
    put_doc,
    replication_doc,
    replication_task,
)
from tests.support.pouchdb import PouchServer, wait_until

job_module = load_library("couchdb_replication_job")


def job_task(task_name: str, server: PouchServer, doc_id: str, **options: Any) -> dict[str, Any]:
    return {
        "name": task_name,
        "couchdb_replication_job": {"url": server.url, "id": doc_id, **options},
    }


def state(server: PouchServer, doc_id: str) -> str | None:
    return (replication_doc(server, doc_id) or {}).get("_replication_state")


@pytest.mark.standin
def test_a_failed_job_is_restarted_and_a_running_one_left_alone(
    ansible: Ansible, one: PouchServer, tolerant_pouch: PouchServer, name: str
):
    user, password = f"jobber-{uuid.uuid4().hex[:8]}", "job pw/1%"
    for server in (one, tolerant_pouch):
        server.create_db(name)
    add_admin(tolerant_pouch, user, password)
    doc_id = f"{name}-from-one"
    options = pull(one, tolerant_pouch, name, pouchdb_tolerates_rejections=True) | {
        "source_user": user,
        "source_password": password,
        "target_user": user,
        "target_password": password,
    }
    # The source does not know the user yet: the replication fails for good (state error).
    run = ansible.run([replication_task("create", tolerant_pouch, doc_id, **options)])
    assert run.returncode == 0, run.output
    wait_until(lambda: state(tolerant_pouch, doc_id) == "error", timeout=15)
    add_admin(one, user, password)
    job = {"pouchdb_tolerates_rejections": True, "settle_time": 2}

    run = ansible.run(
        [{**job_task("check", tolerant_pouch, doc_id, **job), "check_mode": True}], diff=True
    )
    assert run.returncode == 0, run.output
    check = run["check"]
    assert (check["changed"], check["restarted"], check["condition"]) == (True, True, "failed")
    assert check["diff"] == {
        "before": {"state": "error", "condition": "failed"},
        "after": {"state": "new job"},
    }
    assert "status" not in check
    assert state(tolerant_pouch, doc_id) == "error"

    run = ansible.run(
        [
            job_task("restart", tolerant_pouch, doc_id, **job),
            job_task("again", tolerant_pouch, doc_id, **job),
        ],
        verbosity=3,
        json_output=False,
    )
    assert run.returncode == 0, run.output
    for form in (password, quote(password, safe=""), quote(password)):
        assert form not in run.output, f"{form!r} appears in the output"
    assert state(tolerant_pouch, doc_id) == "triggered"
    assert arrives(tolerant_pouch, name, put_doc(one, name))

    run = ansible.run([job_task("running", tolerant_pouch, doc_id, **job)])
    assert run.returncode == 0, run.output
    running = run["running"]
    assert (running["changed"], running["restarted"], running["condition"]) == (
        False,
        False,
        "running",
    )
    assert running["status"]["state"] == "triggered"
    assert running["status"]["running_for"] >= 2


@pytest.mark.standin
def test_a_running_replication_is_not_restarted_where_that_would_kill_the_server(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    for server in (one, two):
        server.create_db(name)
    doc_id = f"{name}-running"
    run = ansible.run(
        [
            replication_task(
                "create", two, doc_id, wait=True, settle_time=1, **pull(one, two, name)
            ),
            job_task("restart", two, doc_id, state="restarted", wait=False),
            {**job_task("absent", two, f"{doc_id}-none"), "ignore_errors": True},
        ]
    )
    assert run["restart"]["changed"] is False
    assert run["restart"]["restarted"] is False
    assert "cannot restart it without its process exiting" in " ".join(run["restart"]["warnings"])
    assert run["absent"]["failed"] is True
    assert run["absent"]["msg"] == f"There is no replication document '{doc_id}-none' to run."
    assert alive(two)
    assert state(two, doc_id) == "triggered"


def test_a_document_shown_without_its_credentials_is_not_rewritten():
    """CouchDB strips credentials for a reader who is neither an admin nor the owner: a
    rewrite of what it showed would drop them."""
    stripped = {
        "_id": "kuno-messages-from-node2",
        "_rev": "3-ab",
        "source": "http://couchdb-2:5984/messages",
        "target": {"url": "http://couchdb-1:5984/messages"},
        "continuous": True,
        "ansible_credentials_digest": "pbkdf2_sha256$1$salt$00",
    }
    with pytest.raises(job_module.ReplicationError, match="without credentials"):
        job_module.rewritable_body(stripped)
    full = stripped | {"source": "http://u:p@couchdb-2:5984/messages", "_replication_state": "x"}
    assert job_module.rewritable_body(full) == {
        "source": "http://u:p@couchdb-2:5984/messages",
        "target": {"url": "http://couchdb-1:5984/messages"},
        "continuous": True,
        "ansible_credentials_digest": "pbkdf2_sha256$1$salt$00",
    }


def test_info_names_the_pulls_of_a_node(
    ansible: Ansible, one: PouchServer, tolerant_pouch: PouchServer, name: str
):
    """couchdb_replication_info with pull_databases and pull_peers: the ids the replication
    role writes, which exist, which are missing and which of ours are no longer wanted."""
    one.create_db(name)
    options = pull(one, tolerant_pouch, name, continuous=False, create_target=True)
    run = ansible.run(
        [
            replication_task("wanted", tolerant_pouch, f"px-{name}-from-one", **options),
            replication_task("gone", tolerant_pouch, f"px-{name}-from-gone", **options),
            replication_task("not ours", tolerant_pouch, f"{name}-by-hand", **options),
            {
                "name": "info",
                "couchdb_replication_info": {
                    "url": tolerant_pouch.url,
                    "pull_databases": [name],
                    "pull_peers": ["one", "other"],
                    "id_prefix": "px-",
                },
            },
        ]
    )
    assert run.returncode == 0, run.output
    info = run["info"]
    assert info["pulls"] == [
        {"id": f"px-{name}-from-one", "database": name, "peer": "one"},
        {"id": f"px-{name}-from-other", "database": name, "peer": "other"},
    ]
    assert info["wanted"] == [f"px-{name}-from-one", f"px-{name}-from-other"]
    assert info["missing"] == [f"px-{name}-from-other"]
    assert info["unwanted"] == [f"px-{name}-from-gone"]
    assert {r["id"]: r["wanted"] for r in info["replications"]} == {
        f"px-{name}-from-one": True,
        f"px-{name}-from-gone": False,
        f"{name}-by-hand": False,
    }
