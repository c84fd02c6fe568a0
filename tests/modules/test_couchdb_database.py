"""couchdb_database against a real pouchdb-server: check mode, create, rerun, update, delete."""

from __future__ import annotations

from tests.modules.helpers import Ansible
from tests.support.pouchdb import PouchServer, http_json

SECURITY = {"admins": {"names": ["ops"]}, "members": {"roles": ["kuno", "audit"]}}


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
            database_task("without security", one, name),
            database_task("delete check mode", one, name, state="absent", check_mode=True),
        ]
    )

    assert run.returncode == 0, run.output
    assert run["update"]["changed"] is True
    assert run["without security"]["changed"] is False
    assert run["delete check mode"]["changed"] is True
    assert http_json("GET", one.db_url(name) + "/_security")[1]["members"]["roles"] == ["kuno"]
    assert exists(one, name)

    run = ansible.run(
        [
            database_task("delete", one, name, state="absent"),
            database_task("delete again", one, name, state="absent"),
        ]
    )

    assert run.returncode == 0, run.output
    assert run["delete"]["changed"] is True
    assert run["delete"]["database"] is None
    assert run["delete again"]["changed"] is False
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
