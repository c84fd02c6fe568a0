"""The replication role's heal.yml (playbooks/heal.yml) on real pouchdb-server processes:
a replication that gave up is restarted, one that runs is left alone."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from tests.modules.conftest import add_admin
from tests.modules.helpers import REPO, Ansible
from tests.support.pouchdb import PouchServer, http_json, wait_until

pytestmark = pytest.mark.standin

ROLE = str(REPO / "roles" / "replication")


def heal_task(source: PouchServer, target: PouchServer, db: str, user: str, password: str):
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
        },
    }


def state(server: PouchServer, doc_id: str, user: str, password: str) -> Any:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    _status, doc = http_json(
        "GET", f"{server.url}/_replicator/{doc_id}", headers={"Authorization": f"Basic {auth}"}
    )
    return doc.get("_replication_state")


def pulls(run) -> list[dict[str, Any]]:
    return run[f"{ROLE} : Pull every database from every other node"]["results"]


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
    assert [pull.get("restarted") for pull in pulls(run)] == [True]
    assert state(tolerant_pouch, doc_id, user, password) == "triggered"
    status, body = http_json("PUT", f"{one.db_url(name)}/after-heal", {"kind": "probe"})
    assert status == 201, body
    wait_until(lambda: "after-heal" in tolerant_pouch.all_ids(name), timeout=15)

    # Everything runs: nothing is restarted, nothing changes.
    run = ansible.run([task])
    assert run.returncode == 0, run.output
    assert not any(pull.get("restarted") or pull.get("changed") for pull in pulls(run))
