"""The replication role's heal.yml (playbooks/heal.yml) on real pouchdb-server processes:
a replication that gave up is restarted, so is one that runs but stalls on a connection a
partition left dead; one that runs and carries its changes is left alone."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest

from tests.modules.conftest import add_admin
from tests.modules.helpers import REPO, Ansible
from tests.support.pouchdb import PouchServer, http_json, wait_until
from tests.support.relay import Relay

pytestmark = pytest.mark.standin

ROLE = str(REPO / "roles" / "replication")
# Seconds a stalled pull is left to show it does not recover by itself.
STALL_SECONDS = 5


def heal_task(
    source: PouchServer | Relay,
    target: PouchServer,
    db: str,
    user: str,
    password: str,
    **more: Any,
):
    """heal.yml of the role on target, pulling db from source (node names are ports)."""
    return {
        "name": "heal",
        "ansible.builtin.include_role": {
            "name": ROLE,
            "tasks_from": "heal.yml",
        },
        "vars": {
            "replication_url": target.url,
            "replication_node_name": str(target.port),
            "replication_peers": [str(source.port)],
            "replication_peer_url_format": "http://127.0.0.1:{}",
            "replication_databases": [db],
            "replication_indexes": [],
            "replication_user": user,
            "replication_password": password,
            "replication_pouchdb_tolerates_rejections": True,
            # Above the 10 s a replication must have run before it counts (wait.yml).
            "replication_wait_timeout": 20,
        }
        | more,
    }


def replicator_doc(server: PouchServer, doc_id: str, user: str, password: str) -> Any:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    _status, doc = http_json(
        "GET", f"{server.url}/_replicator/{doc_id}", headers={"Authorization": f"Basic {auth}"}
    )
    return doc


def state(server: PouchServer, doc_id: str, user: str, password: str) -> Any:
    return replicator_doc(server, doc_id, user, password).get("_replication_state")


def replication_id(server: PouchServer, doc_id: str, user: str, password: str) -> Any:
    """The job pouchdb-server runs for the document (a new job gets a new one)."""
    return replicator_doc(server, doc_id, user, password).get("_replication_id")


def pulls(run) -> list[dict[str, Any]]:
    return run[f"{ROLE} : Pull every database from every other node"]["results"]


def restarts(run) -> list[dict[str, Any]]:
    """What heal restarted (couchdb_replication_job, one result per replication)."""
    return run[f"{ROLE} : Restart the replications that fail or stall"].get("results", [])


def assert_pulled(source: PouchServer, target: PouchServer, db: str, doc_id: str) -> None:
    """A probe document `doc_id` written to db on source reaches target within 15 s."""
    status, body = http_json("PUT", f"{source.db_url(db)}/{doc_id}", {"kind": "probe"})
    assert status == 201, body
    wait_until(lambda: doc_id in target.all_ids(db), timeout=15)


def assert_heal_leaves_every_pull_alone(ansible: Ansible, task: dict[str, Any]) -> None:
    """heal.yml succeeds and neither restarts nor changes any pull."""
    run = ansible.run([task])
    assert run.returncode == 0, run.output
    assert not any(pull.get("restarted") or pull.get("changed") for pull in pulls(run))
    assert not any(job.get("restarted") or job.get("changed") for job in restarts(run))


def test_heal_restarts_a_replication_that_gave_up(
    ansible: Ansible, one: PouchServer, tolerant_pouch: PouchServer, name: str
) -> None:
    user, password = f"healer-{uuid.uuid4().hex[:8]}", "heal pw/1"
    for server in (one, tolerant_pouch):
        server.create_db(name)
    # The user is the target's admin, as in a deployment (ends this server's admin party).
    status, body = http_json("PUT", f"{tolerant_pouch.url}/_config/admins/{user}", password)
    assert status == 200, body
    task = heal_task(one, tolerant_pouch, name, user, password)
    doc_id = f"kuno-{name}-from-{one.port}"

    # The source does not know the user yet: the replication fails for good (state error).
    run = ansible.run([task])
    assert run.returncode != 0, run.output
    assert state(tolerant_pouch, doc_id, user, password) == "error", run.output

    # The source knows it now (an admin, as in a deployment: its databases are admin-only);
    # pouchdb-server does not retry an error by itself: heal does.
    add_admin(one, user, password)
    run = ansible.run([task])
    assert run.returncode == 0, run.output
    assert [job.get("restarted") for job in restarts(run)] == [True]
    assert not any(pull.get("changed") for pull in pulls(run))
    assert state(tolerant_pouch, doc_id, user, password) == "triggered"
    assert_pulled(one, tolerant_pouch, name, "after-heal")

    # Everything runs: nothing is restarted, nothing changes.
    assert_heal_leaves_every_pull_alone(ansible, task)


def test_heal_restarts_a_pull_that_runs_but_stalls_on_a_dead_connection(
    ansible: Ansible, one: PouchServer, tolerant_pouch: PouchServer, name: str
) -> None:
    """The target pulls from `one` through a relay; freezing the relay leaves the pull's
    long-poll on a dead connection while new connections work (a healed partition)."""
    user, password = f"healer-{uuid.uuid4().hex[:8]}", "heal pw/2"
    add_admin(one, user, password)
    for server in (one, tolerant_pouch):
        server.create_db(name)
    status, body = http_json("PUT", f"{tolerant_pouch.url}/_config/admins/{user}", password)
    assert status == 200, body

    with Relay(one.port) as relay:
        task = heal_task(
            relay,
            tolerant_pouch,
            name,
            user,
            password,
            replication_stall_window=3,
            replication_wait_timeout=40,
        )
        run = ansible.run([task])
        assert run.returncode == 0, run.output
        assert_pulled(one, tolerant_pouch, name, "before")
        # Nothing lacking: heal leaves the running pull alone.
        assert_heal_leaves_every_pull_alone(ansible, task)

        time.sleep(1)  # the pull's next long-poll is under way
        assert relay.freeze() > 0
        status, body = http_json("PUT", f"{one.db_url(name)}/during", {"kind": "probe"})
        assert status == 201, body
        time.sleep(STALL_SECONDS)
        assert "during" not in tolerant_pouch.all_ids(name), "the pull did not stall"
        doc_id = f"kuno-{name}-from-{relay.port}"
        assert state(tolerant_pouch, doc_id, user, password) == "triggered"

        job_before = replication_id(tolerant_pouch, doc_id, user, password)

        run = ansible.run([task])
        assert run.returncode == 0, run.output
        found = run[f"{ROLE} : Find the replications of this node that fail or stall"]
        [pull] = found["replications"]
        assert (pull["condition"], pull["stalled"], pull["missing_changes"]) == ("stalled", True, 1)
        # A new job, as on CouchDB: it carries what the stalled one did not.
        assert found["restart"] == [doc_id]
        assert [job.get("restarted") for job in restarts(run)] == [True]
        wait_until(lambda: "during" in tolerant_pouch.all_ids(name), timeout=15)
        job_after = replication_id(tolerant_pouch, doc_id, user, password)
        assert job_after not in (None, job_before)

        # Whatever dead connection is left ends at last: the old job, cancelled, has ended or
        # ends with it. It must not write its end into the new job's document
        # (pouchdb-replicator did: `completed`, the new job no longer tracked) nor stop it.
        relay.cut_frozen()
        assert_pulled(one, tolerant_pouch, name, "after-cut")
        assert state(tolerant_pouch, doc_id, user, password) == "triggered"
        assert replication_id(tolerant_pouch, doc_id, user, password) == job_after
        assert_heal_leaves_every_pull_alone(ansible, task)
