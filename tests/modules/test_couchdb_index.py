"""couchdb_index against a real pouchdb-server: check mode, create, rerun, replace, delete."""

from __future__ import annotations

from typing import Any

from tests.modules.helpers import Ansible, delete_twice
from tests.support.pouchdb import PouchServer, http_json

FIELDS = ["recipientId", "timestamp"]
# How the server lists them.
FIELDS_ASC = [{"recipientId": "asc"}, {"timestamp": "asc"}]
MESSAGES_ONLY = {"type": "message"}


def index_task(task_name: str, server: PouchServer, db: str, check_mode=None, **options) -> dict:
    args = {"url": server.url, "database": db, "ddoc": "kuno", "name": "recipient-timestamp"}
    task: dict[str, Any] = {"name": task_name, "couchdb_index": {**args, **options}}
    if check_mode is not None:
        task["check_mode"] = check_mode
    return task


def filtered_task(task_name: str, server: PouchServer, db: str, selector: dict, **options) -> dict:
    """index_task on FIELDS with `selector` as the partial filter selector."""
    return index_task(
        task_name, server, db, fields=FIELDS, partial_filter_selector=selector, **options
    )


def indexes(server: PouchServer, db: str) -> dict[str, dict]:
    status, body = http_json("GET", server.db_url(db) + "/_index")
    assert status == 200, body
    return {f"{i['ddoc']}/{i['name']}": i["def"] for i in body["indexes"] if i["type"] == "json"}


def test_index_lifecycle(ansible: Ansible, one: PouchServer, name: str):
    one.create_db(name)
    key = "_design/kuno/recipient-timestamp"

    run = ansible.run(
        [filtered_task("create", one, name, MESSAGES_ONLY)],
        check=True,
        diff=True,
    )

    assert run.returncode == 0, run.output
    assert run["create"]["changed"] is True
    assert run["create"]["index"]["ddoc"] == "_design/kuno"
    assert run["create"]["diff"]["before"] == {}
    assert indexes(one, name) == {}

    run = ansible.run(
        [
            filtered_task("create", one, name, MESSAGES_ONLY),
            filtered_task(
                "rerun with the ddoc prefix", one, name, MESSAGES_ONLY, ddoc="_design/kuno"
            ),
            index_task(
                "other fields, check mode", one, name, fields=["recipientId"], check_mode=True
            ),
        ],
        diff=True,
    )

    assert run.returncode == 0, run.output
    assert run["create"]["changed"] is True
    assert run["rerun with the ddoc prefix"]["changed"] is False
    assert run["other fields, check mode"]["changed"] is True
    assert run["other fields, check mode"]["differences"] == ["fields", "partial_filter_selector"]
    assert indexes(one, name) == {
        key: {"fields": FIELDS_ASC, "partial_filter_selector": MESSAGES_ONLY}
    }

    run = ansible.run(
        [
            index_task("other fields", one, name, fields=["recipientId"]),
            index_task("other fields again", one, name, fields=["recipientId"]),
            index_task("delete, check mode", one, name, state="absent", check_mode=True),
        ]
    )

    assert run.returncode == 0, run.output
    assert run["other fields"]["changed"] is True
    assert run["other fields again"]["changed"] is False
    assert run["delete, check mode"]["changed"] is True
    assert indexes(one, name) == {key: {"fields": [{"recipientId": "asc"}]}}

    delete_twice(ansible, index_task, one, name)
    assert indexes(one, name) == {}


def test_the_index_serves_a_sorted_query(ansible: Ansible, one: PouchServer, name: str):
    """What the standard node relies on: a find sorted on both fields uses the index."""
    one.create_db(name)
    for number, (recipient, timestamp) in enumerate([("bob", 3), ("bob", 1), ("eve", 2)]):
        doc = {"type": "message", "recipientId": recipient, "timestamp": timestamp}
        assert http_json("PUT", f"{one.db_url(name)}/m{number}", doc)[0] == 201

    run = ansible.run([filtered_task("create", one, name, MESSAGES_ONLY)])
    assert run.returncode == 0, run.output

    status, found = http_json(
        "POST",
        one.db_url(name) + "/_find",
        {
            "selector": {"type": "message", "recipientId": "bob", "timestamp": {"$gt": 0}},
            "sort": [{"recipientId": "asc"}, {"timestamp": "asc"}],
            "use_index": ["kuno", "recipient-timestamp"],
        },
    )
    assert status == 200, found
    assert [doc["timestamp"] for doc in found["docs"]] == [1, 3]
    assert "warning" not in found


def test_a_selector_listed_in_couchdb_3s_normal_form_is_not_a_change(
    ansible: Ansible, one: PouchServer, name: str
):
    """Issue 11 item 5. CouchDB 3 lists {"type": "message"} as {"type": {"$eq": "message"}};
    pouchdb-server lists what it was given, so the index is made here as CouchDB lists it."""
    one.create_db(name)
    normal = {"type": {"$eq": "message"}, "recipientId": {"$exists": True}}
    status, body = http_json(
        "POST",
        one.db_url(name) + "/_index",
        {
            "index": {"fields": FIELDS, "partial_filter_selector": normal},
            "ddoc": "kuno",
            "name": "recipient-timestamp",
            "type": "json",
        },
    )
    assert status == 200, body
    written = {"recipientId": {"$exists": True}, "type": "message"}

    run = ansible.run(
        [
            filtered_task("as written", one, name, written),
            filtered_task(
                "another filter, check mode", one, name, {"type": "receipt"}, check_mode=True
            ),
        ]
    )

    assert run.returncode == 0, run.output
    assert run["as written"]["changed"] is False
    assert run["as written"]["index"]["partial_filter_selector"] == {
        "$and": [{"recipientId": {"$exists": True}}, {"type": {"$eq": "message"}}]
    }
    assert run["another filter, check mode"]["changed"] is True
    assert run["another filter, check mode"]["differences"] == [
        "partial_filter_selector.$and",
        "partial_filter_selector.type",
    ]
    key = "_design/kuno/recipient-timestamp"
    assert indexes(one, name)[key]["partial_filter_selector"] == normal
