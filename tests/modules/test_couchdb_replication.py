"""couchdb_replication and couchdb_replication_info against real pouchdb-server processes."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.modules.conftest import REPLICATION_PASSWORD, REPLICATION_USER
from tests.modules.helpers import REPO, Ansible, PlaybookRun
from tests.support.pouchdb import PouchServer, http_json, wait_until

ROLE = str(REPO / "roles" / "replication")


def replication_task(
    task_name: str, server: PouchServer, doc_id: str, check_mode=None, **options: Any
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "name": task_name,
        "couchdb_replication": {"url": server.url, "id": doc_id, **options},
    }
    if check_mode is not None:
        task["check_mode"] = check_mode
    return task


def pull(source: PouchServer, target: PouchServer, db: str, **options: Any) -> dict[str, Any]:
    """Options of a pull of db from source into target, with credentials for both (the
    databases are admin-only, as CouchDB 3 makes them)."""
    return {
        "source": source.db_url(db),
        "target": target.db_url(db),
        "source_user": REPLICATION_USER,
        "source_password": REPLICATION_PASSWORD,
        "target_user": REPLICATION_USER,
        "target_password": REPLICATION_PASSWORD,
        **options,
    }


def refused_pull(source: PouchServer, tolerant: PouchServer, db: str) -> dict[str, Any]:
    """Options of a pull whose source refuses the password, into a tolerant pouchdb-server."""
    return pull(source, tolerant, db, source_password="wrong", pouchdb_tolerates_rejections=True)


def with_userinfo(url: str) -> str:
    """The URL as pouchdb-server is given it: the replication user's credentials inside."""
    userinfo = f"{REPLICATION_USER}:{quote(REPLICATION_PASSWORD, safe='')}@"
    return url.replace("://", f"://{userinfo}", 1)


def replication_doc(server: PouchServer, doc_id: str) -> dict[str, Any] | None:
    status, body = http_json("GET", f"{server.url}/_replicator/{doc_id}")
    assert status in (200, 404), body
    return body if status == 200 else None


def put_doc(server: PouchServer, db: str) -> str:
    doc_id = uuid.uuid4().hex
    status, body = http_json("PUT", f"{server.db_url(db)}/{doc_id}", {"type": "message"})
    assert status == 201, body
    return doc_id


def arrives(server: PouchServer, db: str, doc_id: str, timeout: float = 15.0) -> bool:
    wait_until(lambda: doc_id in server.all_ids(db), timeout=timeout)
    return True


def alive(server: PouchServer) -> bool:
    status, body = http_json("GET", server.url + "/")
    return server.running and status == 200 and "express-pouchdb" in body


@pytest.mark.standin
def test_continuous_replication_lifecycle(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    one.create_db(name)
    two.create_db(name)
    doc_id = f"{name}-from-one"
    options = pull(one, two, name)

    run = ansible.run([replication_task("create", two, doc_id, **options)], check=True, diff=True)

    assert run.returncode == 0, run.output
    assert run["create"]["changed"] is True
    assert run["create"]["operation"] == "create"
    assert run["create"]["replication"]["source"] == {"url": one.db_url(name), "credentials": "url"}
    assert run["create"]["replication"]["credentials"] == "********"
    assert replication_doc(two, doc_id) is None

    run = ansible.run(
        [
            replication_task("create", two, doc_id, wait=True, **options),
            replication_task("rerun", two, doc_id, wait=True, **options),
            {
                "name": "info",
                "couchdb_replication_info": {"url": two.url},
            },
        ]
    )

    assert run.returncode == 0, run.output
    assert run["create"]["changed"] is True
    # Counted as running only once it has stayed so for the settle time (10 s by default).
    assert run["create"]["status"]["state"] == "triggered"
    assert run["create"]["status"]["reason"] is None
    assert run["create"]["status"]["running_for"] >= 10
    assert run["create"]["flavour"] == "pouchdb-server"
    assert run["rerun"]["changed"] is False
    # Running for longer than the settle time already: the rerun's wait need not wait again.
    assert run["rerun"]["status"]["running_for"] >= 10
    (info,) = [r for r in run["info"]["replications"] if r["id"] == doc_id]
    assert info["running_for"] >= 10
    assert {
        "id": doc_id,
        "source": one.db_url(name),
        "target": two.db_url(name),
        "state": "triggered",
        "reason": None,
        "healthy": True,
        "condition": "running",
    }.items() <= {k: v for k, v in info.items() if k != "running_for"}.items()
    doc = replication_doc(two, doc_id)
    assert doc is not None
    # pouchdb-server reads credentials from the URL only.
    assert doc["source"].startswith(
        f"http://{REPLICATION_USER}:{quote(REPLICATION_PASSWORD, safe='')}@"
    )
    assert doc["target"] == with_userinfo(two.db_url(name))
    assert doc["ansible_credentials_digest"].startswith("pbkdf2_sha256$")
    assert arrives(two, name, put_doc(one, name))

    # Another password: a change, which pouchdb-server cannot make to a running replication.
    other = {**options, "source_password": "another password"}
    run = ansible.run(
        [
            replication_task("new password, check mode", two, doc_id, check_mode=True, **other),
        ]
    )
    assert run["new password, check mode"]["failed"] is True
    assert "cannot update the running replication" in run["new password, check mode"]["msg"]

    run = ansible.run(
        [
            {
                **replication_task(
                    "remove, check mode", two, doc_id, state="absent", check_mode=True
                ),
                "ignore_errors": True,
            },
            replication_task("remove", two, doc_id, state="absent"),
        ]
    )

    assert run.returncode != 0
    assert run["remove, check mode"]["failed"] is True
    assert run["remove"]["failed"] is True
    assert "cannot remove the running replication" in run["remove"]["msg"]
    assert "Nothing was written" in run["remove"]["msg"]
    time.sleep(0.5)  # the server would have died within milliseconds of a delete
    assert alive(two)
    assert replication_doc(two, doc_id)["_rev"] == doc["_rev"]
    assert arrives(two, name, put_doc(one, name))


@pytest.mark.standin
def test_one_off_replication_restart_and_removal(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    one.create_db(name)
    first = put_doc(one, name)
    doc_id = f"{name}-once"
    options = pull(one, two, name, continuous=False, create_target=True)

    run = ansible.run(
        [
            replication_task("create", two, doc_id, wait=True, **options),
            replication_task("rerun", two, doc_id, wait=True, **options),
        ]
    )

    assert run.returncode == 0, run.output
    assert run["create"]["status"]["state"] == "completed"
    assert run["rerun"]["changed"] is False
    assert first in two.all_ids(name)

    second = put_doc(one, name)
    run = ansible.run(
        [
            replication_task(
                "restart, check mode", two, doc_id, restart=True, check_mode=True, **options
            ),
            replication_task("restart", two, doc_id, restart=True, wait=True, **options),
        ]
    )

    assert run.returncode == 0, run.output
    assert run["restart, check mode"]["changed"] is True
    assert run["restart, check mode"]["restarted"] is True
    assert run["restart"]["changed"] is True
    assert run["restart"]["restarted"] is True
    assert run["restart"]["status"]["state"] == "completed"
    assert second in two.all_ids(name)

    run = ansible.run(
        [
            replication_task("remove, check mode", two, doc_id, state="absent", check_mode=True),
            replication_task("remove", two, doc_id, state="absent"),
            replication_task("remove again", two, doc_id, state="absent"),
        ],
        diff=True,
    )

    assert run.returncode == 0, run.output
    assert run["remove, check mode"]["changed"] is True
    assert run["remove"]["changed"] is True
    assert run["remove"]["diff"]["after"] == {}
    assert run["remove"]["diff"]["before"]["id"] == doc_id
    assert run["remove again"]["changed"] is False
    assert replication_doc(two, doc_id) is None
    assert alive(two)


def refused_create(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str, doc_id: str, **options: Any
) -> PlaybookRun:
    """Database `name` created on `one`, then the task "create" of `doc_id` on `two` with
    `options`, which must fail: asserts it failed; returns the run."""
    one.create_db(name)
    run = ansible.run([replication_task("create", two, doc_id, **options)])
    assert run["create"]["failed"] is True
    return run


@pytest.mark.standin
def test_credentials_the_source_refuses_are_never_written(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    """A pouchdb-server replication that fails authentication kills the process at every start."""
    doc_id = f"{name}-bad-password"
    options = pull(one, two, name, source_password="wrong password")
    run = refused_create(ansible, one, two, name, doc_id, **options)
    assert run["create"]["msg"].startswith(
        "The source refuses the replication's credentials (HTTP 401: "
    )
    assert replication_doc(two, doc_id) is None
    assert alive(two)


def test_no_credential_in_any_output(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    one.create_db(name)
    two.create_db(name)
    doc_id = f"{name}-quiet"
    admin_password = "server-admin-password-0c9e"
    run = ansible.run(
        [
            replication_task("create", two, doc_id, wait=True, **pull(one, two, name)),
            replication_task("rerun", two, doc_id, **pull(one, two, name)),
            {
                **replication_task(
                    "wrong password",
                    two,
                    f"{doc_id}-2",
                    **pull(one, two, name, source_password="wr0ng-pw/x"),
                ),
                "ignore_errors": True,
            },
            {"name": "info", "couchdb_replication_info": {"url": two.url}},
            {
                "name": "as a user the server does not know",
                "couchdb_database": {
                    "url": two.url,
                    "name": name,
                    "user": "admin",
                    "password": admin_password,
                },
                "ignore_errors": True,
            },
        ],
        diff=True,
        verbosity=3,
        json_output=False,
    )

    assert "TASK [create]" in run.stdout and "TASK [info]" in run.stdout
    assert "changed: [localhost]" in run.stdout
    for secret in (REPLICATION_PASSWORD, "wr0ng-pw/x", admin_password):
        for form in (secret, quote(secret, safe=""), quote(secret)):
            assert form not in run.output, f"{form!r} appears in the output"


@pytest.mark.standin
def test_a_tolerant_server_lets_a_running_replication_go(
    ansible: Ansible, one: PouchServer, tolerant_pouch: PouchServer, name: str
):
    # A source open to anyone: the second task drops the credentials.
    one.create_db(name, security={"admins": {}, "members": {}})
    tolerant_pouch.create_db(name)
    doc_id = f"{name}-from-one"
    options = pull(one, tolerant_pouch, name, pouchdb_tolerates_rejections=True)
    run = ansible.run(
        [
            replication_task("create", tolerant_pouch, doc_id, wait=True, **options),
            replication_task(
                "without credentials",
                tolerant_pouch,
                doc_id,
                wait=True,
                **{**options, "source_user": None, "source_password": None},
            ),
        ]
    )
    assert run.returncode == 0, run.output
    assert run["without credentials"]["changed"] is True
    assert run["without credentials"]["differences"] == ["credentials", "source.credentials"]
    assert "@" not in replication_doc(tolerant_pouch, doc_id)["source"]
    assert arrives(tolerant_pouch, name, put_doc(one, name))

    run = ansible.run(
        [replication_task("remove", tolerant_pouch, doc_id, state="absent", **options)]
    )

    assert run.returncode == 0, run.output
    assert run["remove"]["changed"] is True
    late = put_doc(one, name)
    time.sleep(2)
    assert alive(tolerant_pouch)
    assert late not in tolerant_pouch.all_ids(name)


@pytest.mark.standin
def test_wait_fails_with_the_servers_reason(
    ansible: Ansible, one: PouchServer, tolerant_pouch: PouchServer, name: str
):
    """A tolerant pouchdb-server marks a replication the source refuses "error", with a reason."""
    one.create_db(name)
    doc_id = f"{name}-refused"
    options = refused_pull(one, tolerant_pouch, name)
    run = ansible.run(
        [replication_task("create", tolerant_pouch, doc_id, wait=True, wait_timeout=15, **options)]
    )

    assert run.returncode != 0
    assert run["create"]["failed"] is True
    assert (
        run["create"]["msg"] == f"Replication '{doc_id}' is error: Name or password is incorrect."
    )
    assert replication_doc(tolerant_pouch, doc_id)["_replication_state"] == "error"

    run = ansible.run(
        [replication_task("remove", tolerant_pouch, doc_id, state="absent", **options)]
    )
    assert run.returncode == 0, run.output
    assert run["remove"]["changed"] is True
    assert alive(tolerant_pouch)


@pytest.mark.standin
def test_a_selector_is_refused_before_it_kills_pouchdb_server(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    doc_id = f"{name}-messages-only"
    options = {"selector": {"type": "message"}, **pull(one, two, name)}
    run = refused_create(ansible, one, two, name, doc_id, **options)
    assert run["create"]["msg"].startswith(
        "pouchdb-server cannot serve a replication with a selector"
    )
    assert replication_doc(two, doc_id) is None
    time.sleep(0.5)
    assert alive(one) and alive(two)


def test_wait_counts_a_replication_only_once_it_has_settled(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    """Issue 11 item 6: a single running (pouchdb-server: triggered) reading proves nothing;
    CouchDB 3 shows a pull whose source refuses its password as running for 2.4-5.4 s."""
    one.create_db(name)
    two.create_db(name)
    doc_id = f"{name}-settled"
    options = pull(one, two, name)
    started = time.monotonic()
    run = ansible.run(
        [
            replication_task(
                "too short",
                two,
                doc_id,
                wait=True,
                settle_time=5,
                wait_timeout=5,
                check_mode=False,
                **options,
            ),
        ]
    )
    assert run["too short"]["failed"] is True
    assert run["too short"]["msg"] == "settle_time must be shorter than wait_timeout."
    assert replication_doc(two, doc_id) is None

    run = ansible.run(
        [replication_task("create", two, doc_id, wait=True, settle_time=3, **options)]
    )
    elapsed = time.monotonic() - started

    assert run.returncode == 0, run.output
    assert run["create"]["status"]["state"] == "triggered"
    assert run["create"]["status"]["running_for"] >= 3
    assert elapsed >= 3


def role_wait_task(source: PouchServer, target: PouchServer, db: str) -> dict[str, Any]:
    """The replication role's wait.yml on target, for the pull of db from source."""
    return {
        "name": "wait",
        "ansible.builtin.include_role": {"name": ROLE, "tasks_from": "wait.yml"},
        "vars": {
            "replication_url": target.url,
            "replication_node_name": str(target.port),
            "replication_peers": [str(source.port)],
            "replication_databases": [db],
            "replication_user": target.user,
            "replication_password": target.password,
            "replication_wait_timeout": 30,
        },
    }


def test_the_roles_wait_accepts_only_a_settled_replication(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    """Issue 11 item 6: roles/replication/tasks/wait.yml (deploy, heal.yml, verify.yml)
    accepted the first running reading."""
    one.create_db(name)
    two.create_db(name)
    doc_id = f"kuno-{name}-from-{one.port}"
    run = ansible.run(
        [
            replication_task("create", two, doc_id, **pull(one, two, name)),
            role_wait_task(one, two, name),
        ]
    )

    assert run.returncode == 0, run.output
    waited = run[f"{ROLE} : Wait until every replication of this node has settled running"]
    (replication,) = [r for r in waited["replications"] if r["id"] == doc_id]
    assert replication["healthy"] is True
    assert replication["running_for"] >= 10


def test_the_roles_wait_fails_with_the_servers_reason(
    ansible: Ansible, one: PouchServer, tolerant_pouch: PouchServer, name: str
):
    one.create_db(name)
    doc_id = f"kuno-{name}-from-{one.port}"
    options = refused_pull(one, tolerant_pouch, name)
    run = ansible.run(
        [
            replication_task("create", tolerant_pouch, doc_id, **options),
            {
                **role_wait_task(one, tolerant_pouch, name),
                "vars": {
                    **role_wait_task(one, tolerant_pouch, name)["vars"],
                    "replication_wait_timeout": 4,
                },
            },
        ]
    )

    assert run.returncode != 0
    failed = run[f"{ROLE} : Fail naming the replications that do not run"]
    assert failed["failed"] is True
    assert f"{doc_id} (error: Name or password is incorrect.)" in failed["msg"]
    assert alive(tolerant_pouch)
