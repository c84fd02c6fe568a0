"""The deployment owns the schema: a node only checks it, and is not ready without it."""

from __future__ import annotations

import logging
from urllib.parse import quote

from kuno.common.schema import MESSAGES
from tests.standard.conftest import bearer
from tests.support.messages import message_body
from tests.support.pouchdb import http_json
from tests.support.schema import apply_schema, health_once_ready


def every_part(database: str) -> list[str]:
    return [
        f"database {database}",
        *(f"index {i.name} of {database}" for i in MESSAGES.indexes),
        *(f"design {d.id} of {database}" for d in MESSAGES.designs),
    ]


async def test_a_node_without_the_schema_is_not_ready_names_it_and_is_ready_once_applied(
    start_node, couchdb, database, master_token, caplog
):
    caplog.set_level(logging.WARNING, logger="kuno.standard")
    node = await start_node(couchdb, schema=False)

    response = await node.get("/health")
    assert response.status == 503
    health = await response.json()
    assert health["status"] == "not_ready"
    assert health["couchdb"]["reachable"] is True
    assert health["missing"] == every_part(database)
    logged = [r for r in caplog.records if getattr(r, "missing", None)]
    assert logged and logged[0].missing == every_part(database)
    # Checked, never created: the database is the deployment's to make.
    assert http_json("GET", couchdb.db_url(database))[0] == 404

    apply_schema(couchdb.url, messages=database)

    health = await health_once_ready(node)
    assert health["status"] == "ok"
    assert "missing" not in health
    stored = await node.post("/messages", json=message_body("bob"), headers=bearer(master_token))
    assert stored.status == 201


async def test_a_database_without_its_indexes_is_not_ready_and_each_index_is_named(
    start_node, couchdb, database
):
    couchdb.create_db(database)
    node = await start_node(couchdb, schema=False)

    response = await node.get("/health")
    assert response.status == 503
    assert (await response.json())["missing"] == every_part(database)[1:]
    assert http_json("GET", couchdb.db_url(database) + "/_index")[1]["total_rows"] == 1


async def test_an_index_of_the_schemas_name_with_other_fields_counts_as_missing(
    start_node, couchdb, database
):
    apply_schema(couchdb.url, messages=database)
    [recipient, *_] = MESSAGES.indexes
    url = couchdb.db_url(database)
    status, listing = http_json("GET", url + "/_index")
    assert status == 200
    [listed] = [i for i in listing["indexes"] if i["name"] == recipient.name]
    ddoc = quote(listed["ddoc"], safe="")
    assert http_json("DELETE", f"{url}/_index/{ddoc}/json/{recipient.name}")[0] == 200
    other = {"index": {"fields": ["senderId"]}, "ddoc": recipient.ddoc, "name": recipient.name}
    assert http_json("POST", url + "/_index", other)[0] == 200

    node = await start_node(couchdb, schema=False)

    response = await node.get("/health")
    assert response.status == 503
    assert (await response.json())["missing"] == [f"index {recipient.name} of {database}"]


async def test_the_queue_view_is_the_schemas_checked_never_written_by_the_node(
    start_node, couchdb, database
):
    apply_schema(couchdb.url, messages=database)
    [queues] = MESSAGES.designs
    url = f"{couchdb.db_url(database)}/{queues.id}"
    status, current = http_json("GET", url)
    assert status == 200 and queues.matches(current)
    assert http_json("DELETE", f"{url}?rev={current['_rev']}")[0] == 200

    node = await start_node(couchdb, schema=False)

    response = await node.get("/health")
    assert response.status == 503
    assert (await response.json())["missing"] == [f"design {queues.id} of {database}"]
    assert http_json("GET", url)[0] == 404

    # Other views under the schema's name count as missing too.
    other = {"language": "javascript", "views": {"size": {"map": "function (doc) {}"}}}
    assert http_json("PUT", url, other)[0] == 201
    node = await start_node(couchdb, schema=False)
    response = await node.get("/health")
    assert (await response.json())["missing"] == [f"design {queues.id} of {database}"]
    assert http_json("GET", url)[1]["views"] == other["views"]

    apply_schema(couchdb.url, messages=database)
    assert (await health_once_ready(node))["status"] == "ok"
