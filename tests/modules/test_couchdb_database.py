"""couchdb_database against a real pouchdb-server: check mode, create, rerun, update, delete."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.modules.helpers import REPO, Ansible, delete_twice
from tests.support.pouchdb import PouchServer, http_json, wait_until

SECURITY = {"admins": {"names": ["ops"]}, "members": {"roles": ["kuno", "audit"]}}
ADMIN_ONLY = {
    "admins": {"names": [], "roles": ["_admin"]},
    "members": {"names": [], "roles": ["_admin"]},
}


def database_task(task_name: str, server: PouchServer, db: str, check_mode=None, **options) -> dict:
    task = {"name": task_name, "couchdb_database": {"url": server.url, "name": db, **options}}
    if check_mode is not None:
        task["check_mode"] = check_mode
    return task


def exists(server: PouchServer, db: str) -> bool:
    status, _ = http_json("GET", server.db_url(db))
    return status == 200


def test_check_mode_predicts_and_writes_nothing(ansible: Ansible, one: PouchServer, name: str):
    run = ansible.run(
        [database_task("create", one, name, security=SECURITY)], check=True, diff=True
    )

    assert run.returncode == 0, run.output
    assert run["create"]["changed"] is True
    assert run["create"]["operation"] == "create"
    assert run["create"]["diff"]["before"] == {}
    assert run["create"]["diff"]["after"]["security"]["members"]["roles"] == ["audit", "kuno"]
    assert not exists(one, name)


def test_create_rerun_update_delete(ansible: Ansible, one: PouchServer, name: str):
    changed_security = {"admins": {"names": ["ops"]}, "members": {"roles": ["kuno"]}}
    run = ansible.run(
        [
            database_task("create", one, name, security=SECURITY),
            # Same lists in another order: nothing to do.
            database_task(
                "rerun",
                one,
                name,
                security={"members": {"roles": ["audit", "kuno"]}, "admins": {"names": ["ops"]}},
            ),
            database_task(
                "update check mode", one, name, security=changed_security, check_mode=True
            ),
        ],
        diff=True,
    )

    assert run.returncode == 0, run.output
    assert run["create"]["changed"] is True
    assert run["rerun"]["changed"] is False
    assert run["update check mode"]["changed"] is True
    assert run["update check mode"]["differences"] == ["security.members.roles"]
    status, security = http_json("GET", one.db_url(name) + "/_security")
    assert status == 200
    assert security == {
        "admins": {"names": ["ops"], "roles": []},
        "members": {"names": [], "roles": ["audit", "kuno"]},
    }

    run = ansible.run(
        [
            database_task("update", one, name, security=changed_security),
            database_task("update again", one, name, security=changed_security),
            database_task("delete check mode", one, name, state="absent", check_mode=True),
        ]
    )

    assert run.returncode == 0, run.output
    assert run["update"]["changed"] is True
    assert run["update again"]["changed"] is False
    assert run["delete check mode"]["changed"] is True
    assert http_json("GET", one.db_url(name) + "/_security")[1]["members"]["roles"] == ["kuno"]
    assert exists(one, name)

    # Without the option: admin-only, as CouchDB 3 makes a new database.
    run = ansible.run([database_task("default security", one, name)])

    assert run.returncode == 0, run.output
    assert run["default security"]["changed"] is True
    assert run["default security"]["differences"] == [
        "security.admins.names",
        "security.admins.roles",
        "security.members.roles",
    ]
    assert http_json("GET", one.db_url(name) + "/_security")[1] == ADMIN_ONLY

    run = delete_twice(ansible, database_task, one, name)
    assert run["delete"]["database"] is None
    assert not exists(one, name)


def test_an_unreachable_server_fails_with_a_clear_message(ansible: Ansible, name: str):
    from tests.support.pouchdb import free_port

    url = f"http://127.0.0.1:{free_port()}"
    run = ansible.run(
        [{"name": "create", "couchdb_database": {"url": url, "name": name, "timeout": 2}}]
    )

    assert run.returncode != 0
    assert run["create"]["failed"] is True
    assert run["create"]["msg"].startswith(f"GET /{name} failed:")
    assert "refused" in run["create"]["msg"].lower()


# --- admin-only on a server that has an admin (issue 11 item 3) ------------------------------

ADMIN, ADMIN_PASSWORD = "kuno-admin", "admin pw/7c1e"
BASIC = "Basic " + base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()
AS_ADMIN = {"Authorization": BASIC}
COUCHDB_ROLE = str(REPO / "roles" / "couchdb")


def secured_server(workdir: Path, name: str) -> PouchServer:
    """A pouchdb-server with a server admin, as the image runs it (docker-entrypoint.js writes
    admins into its config): no admin party, so _security is enforced."""
    server = PouchServer(workdir / name, name)
    workdir.joinpath(name).mkdir(parents=True)
    config = {"log": {"level": "warning"}, "admins": {ADMIN: ADMIN_PASSWORD}}
    (workdir / name / "config.json").write_text(json.dumps(config))
    return server.start()


@pytest.fixture
def secured_pair(test_dir: Path) -> Iterator[tuple[PouchServer, PouchServer]]:
    servers = (secured_server(test_dir, "secured-1"), secured_server(test_dir, "secured-2"))
    yield servers
    for server in servers:
        server.stop()


def databases_task(server: PouchServer, names: list[str]) -> dict[str, Any]:
    """The couchdb role's databases.yml against server."""
    return {
        "name": "databases",
        "ansible.builtin.include_role": {"name": COUCHDB_ROLE, "tasks_from": "databases.yml"},
        "vars": {
            "couchdb_host_url": server.url,
            "couchdb_admin_user": ADMIN,
            "couchdb_admin_password": ADMIN_PASSWORD,
            "couchdb_databases": names,
        },
    }


def role_results(run, task: str) -> list[dict[str, Any]]:
    result = run[f"{COUCHDB_ROLE} : {task}"]
    return result.get("results", [result])


def test_the_deployments_databases_refuse_anonymous_clients(
    ansible: Ansible, secured_pair: tuple[PouchServer, PouchServer], name: str
):
    one, two = secured_pair
    messages, users = f"{name}_messages", f"{name}_users"

    run = ansible.run([databases_task(one, [messages, users])], check=True)

    assert run.returncode == 0, run.output
    assert [r["changed"] for r in role_results(run, "Create the databases, admin-only")] == [
        True,
        True,
    ]
    assert http_json("GET", one.db_url(users), headers=AS_ADMIN)[0] == 404

    run = ansible.run([databases_task(one, [messages, users])])

    assert run.returncode == 0, run.output
    assert role_results(run, "Make the replicator database admin-only")[0]["changed"] is True
    for db in (messages, users, "_replicator"):
        assert http_json("GET", one.db_url(db) + "/_security", headers=AS_ADMIN) == (
            200,
            ADMIN_ONLY,
        )
    # The admin reads and writes; an anonymous client does neither.
    assert (
        http_json("PUT", one.db_url(users) + "/org.kuno.user:carol", {"k": 1}, headers=AS_ADMIN)[0]
        == 201
    )
    for method, path, body in [
        ("GET", "/_all_docs?include_docs=true", None),
        ("GET", "/org.kuno.user:carol", None),
        ("GET", "/_changes?include_docs=true", None),
        ("PUT", "/org.kuno.user:mallory", {"k": 2}),
        ("POST", "/_all_docs", {"keys": ["org.kuno.user:carol"]}),
    ]:
        status, answer = http_json(method, one.db_url(users) + path, body, anonymous=True)
        assert status == 401, (method, path, answer)
    assert (
        http_json("GET", one.db_url(users) + "/_all_docs", headers=AS_ADMIN)[1]["rows"][0]["id"]
        == "org.kuno.user:carol"
    )

    run = ansible.run([databases_task(one, [messages, users])])

    assert run.returncode == 0, run.output
    assert run.stats["changed"] == 0

    # Replications keep working with the admin's credentials, through secured databases
    # and a secured _replicator.
    ansible.run([databases_task(two, [messages, users])])
    doc_id = f"{users}-from-one"
    run = ansible.run(
        [
            {
                "name": "pull",
                "couchdb_replication": {
                    "url": two.url,
                    "user": ADMIN,
                    "password": ADMIN_PASSWORD,
                    "id": doc_id,
                    "source": one.db_url(users),
                    "source_user": ADMIN,
                    "source_password": ADMIN_PASSWORD,
                    "target": two.db_url(users),
                    "target_user": ADMIN,
                    "target_password": ADMIN_PASSWORD,
                    "wait": True,
                    "settle_time": 2,
                },
            }
        ]
    )
    assert run.returncode == 0, run.output
    wait_until(
        lambda: (
            http_json("GET", two.db_url(users) + "/org.kuno.user:carol", headers=AS_ADMIN)[0] == 200
        )
    )


def test_the_stand_in_refuses_anonymous_find_and_bulk_get(
    ansible: Ansible, secured_pair: tuple[PouchServer, PouchServer], name: str
):
    one, _two = secured_pair
    run = ansible.run([databases_task(one, [name])])
    assert run.returncode == 0, run.output
    assert http_json("PUT", one.db_url(name) + "/secret", {"k": 1}, headers=AS_ADMIN)[0] == 201

    assert (
        http_json("POST", one.db_url(name) + "/_find", {"selector": {}}, anonymous=True)[0] == 401
    )
    assert (
        http_json(
            "POST", one.db_url(name) + "/_bulk_get", {"docs": [{"id": "secret"}]}, anonymous=True
        )[0]
        == 401
    )
