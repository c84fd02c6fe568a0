"""The TTL sweep, /health, /metrics, and riding out a CouchDB outage."""

from __future__ import annotations

import asyncio
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kuno.common.schema import MESSAGES
from tests.standard.conftest import bearer
from tests.support.messages import DAY_MS, message_body, now_ms
from tests.support.pouchdb import eventually
from tests.support.schema import apply_schema


async def test_the_sweep_deletes_expired_messages_nobody_read(
    start_node, couchdb, database, master_token
):
    node = await start_node(couchdb, sweep_interval=0.2)
    past = now_ms() - 40 * DAY_MS
    expired = [message_body(f"user{i}", timestamp=past, expiresAt=past + DAY_MS) for i in range(5)]
    live = message_body("bob")
    for body in [*expired, live]:
        assert (await node.post("/messages", json=body, headers=bearer(master_token))).status == 201

    await eventually(lambda: couchdb.all_ids(database) == {live["id"]}, within=10)
    metrics = await (await node.get("/metrics")).text()
    assert "kuno_messages_expired_total 5.0" in metrics


@pytest.mark.standin
async def test_health_names_the_node_and_its_replications(start_node, server_pair, database):
    a, b = server_pair
    node = await start_node(a, node_name="node7")
    a.create_db(database)
    b.create_db(database)
    a.replicate_from(b, database, doc_id="from-b")

    async def replication_listed():
        # Listed once its document exists; its state once pouchdb-server has written it.
        body = await (await node.get("/health")).json()
        started = body["replications"] and body["replications"][0]["state"] != "unknown"
        return body if started else None

    health = await eventually(replication_listed)
    assert health["node"] == "node7"
    assert health["status"] == "ok"
    assert health["couchdb"] == {"reachable": True, "flavour": "pouchdb-server"}
    [replication] = health["replications"]
    assert replication["id"] == "from-b"
    assert replication["source"] == b.db_url(database)
    assert replication["state"] == "triggered"


async def test_couchdb_down_gives_503_and_the_node_recovers_by_itself(
    start_node, private_couchdb, master_token, user_token
):
    node = await start_node(private_couchdb)
    before = message_body("bob")
    assert (await node.post("/messages", json=before, headers=bearer(master_token))).status == 201

    private_couchdb.stop()
    down = await node.post("/messages", json=message_body("bob"), headers=bearer(master_token))
    assert down.status == 503
    assert (await down.json())["error"] == "couchdb_unavailable"
    health = await node.get("/health")
    assert health.status == 503
    assert (await health.json())["couchdb"]["reachable"] is False

    private_couchdb.start()
    after = message_body("bob")
    assert (await node.post("/messages", json=after, headers=bearer(master_token))).status == 201
    assert (await node.get("/health")).status == 200
    listed = await node.get("/messages/bob", headers=bearer(user_token("bob")))
    assert [m["id"] for m in (await listed.json())["messages"]] == [before["id"], after["id"]]


async def test_a_node_started_before_couchdb_is_ready_once_couchdb_has_the_schema(
    start_node, private_couchdb, master_token
):
    private_couchdb.stop()
    node = await start_node(private_couchdb, schema=False, database="late")
    assert (await node.get("/health")).status == 503
    private_couchdb.start()
    # Up, but without the schema, which the node never creates: still not ready.
    health = await node.get("/health")
    assert health.status == 503
    assert "database late" in (await health.json())["missing"]
    apply_schema(private_couchdb.url, messages="late")

    async def stored():
        response = await node.post("/messages", json=message_body(), headers=bearer(master_token))
        return response.status == 201

    await eventually(stored, within=15, interval=0.5)
    assert (await node.get("/health")).status == 200


async def test_metrics_count_requests_by_route_and_stored_messages(node, master_token, user_token):
    await node.post("/messages", json=message_body("bob"), headers=bearer(master_token))
    await node.get("/messages/bob", headers=bearer(user_token("bob")))
    await node.get("/messages/bob", headers=bearer(user_token("eve")))
    response = await node.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    assert 'kuno_http_requests_total{method="POST",route="/messages",status="201"} 1.0' in text
    assert (
        'kuno_http_requests_total{method="GET",route="/messages/{user_id}",status="403"} 1.0'
        in text
    )
    assert "kuno_messages_stored_total 1.0" in text
    assert 'kuno_http_request_duration_seconds_count{method="GET",route="/messages/{user_id}"}' in (
        text
    )
    # Labels name routes, never users.
    assert "bob" not in text


async def test_metrics_give_the_free_and_total_bytes_of_the_nodes_filesystem(node):
    """KunoDiskFreeLow (roles/monitoring) reads these two; statvfs of KUNO_FILESYSTEM_PATH."""
    text = await (await node.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    stat = os.statvfs("/")
    (avail,) = families["kuno_filesystem_avail_bytes"].samples
    (size,) = families["kuno_filesystem_size_bytes"].samples
    assert avail.labels == size.labels == {"mountpoint": "/"}
    assert size.value == stat.f_blocks * stat.f_frsize
    assert 0 < avail.value <= size.value
    # Free space moves between the two reads; within 1 GiB is the same filesystem.
    assert abs(avail.value - stat.f_bavail * stat.f_frsize) < 1 << 30


async def test_unknown_routes_and_methods_get_json_errors(node):
    missing = await node.get("/nope")
    assert missing.status == 404
    assert (await missing.json())["error"] == "not_found"
    wrong = await node.put("/messages")
    assert wrong.status == 405
    assert (await wrong.json())["error"] == "method_not_allowed"


async def test_health_reads_couchdb_3_scheduler_states_and_reports_a_crashing_one(
    aiohttp_server, start_node
):
    """CouchDB 3 itself is not installable here: this fake answers with the documented
    shapes of GET / and /_scheduler/docs, the path pouchdb-server cannot exercise."""
    from aiohttp import web

    async def welcome(_):
        return web.json_response({"couchdb": "Welcome", "version": "3.5.0"})

    async def scheduler_docs(_):
        return web.json_response(
            {
                "total_rows": 2,
                "docs": [
                    {
                        "database": "_replicator",
                        "doc_id": "messages-from-node2",
                        "source": "http://admin:*****@couchdb-2:5984/messages/",
                        "target": "http://admin:*****@couchdb-1:5984/messages/",
                        "state": "running",
                    },
                    {
                        "database": "_replicator",
                        "doc_id": "messages-from-node3",
                        "source": "http://admin:*****@couchdb-3:5984/messages/",
                        "target": "http://admin:*****@couchdb-1:5984/messages/",
                        "state": "crashing",
                        "info": {"error": "econnrefused"},
                    },
                ],
            }
        )

    async def database(request):
        return web.json_response({"db_name": request.match_info["db"], "doc_count": 0})

    async def indexes(_):
        # CouchDB 3's listing: the special _all_docs index, then the json ones.
        special = {
            "ddoc": None,
            "name": "_all_docs",
            "type": "special",
            "def": {"fields": [{"_id": "asc"}]},
        }
        listed = [
            {"ddoc": f"_design/{i.ddoc}", "name": i.name, "type": "json", "def": {"fields": i.sort}}
            for i in MESSAGES.indexes
        ]
        return web.json_response({"total_rows": 1 + len(listed), "indexes": [special, *listed]})

    async def design(request):
        ddoc = MESSAGES.design(request.match_info["ddoc"])
        return web.json_response({"_id": ddoc.id, "_rev": "1-a", **ddoc.document()})

    app = web.Application()
    app.router.add_get("/", welcome)
    app.router.add_get("/_scheduler/docs", scheduler_docs)
    app.router.add_get("/{db}", database)
    app.router.add_get("/{db}/_index", indexes)
    app.router.add_get("/{db}/_design/{ddoc}", design)
    fake = await aiohttp_server(app)

    class Server:  # what start_node needs of a server
        url = str(fake.make_url("")).rstrip("/")

    node = await start_node(Server, schema=False)
    response = await node.get("/health")
    assert response.status == 200
    health = await response.json()
    assert health["status"] == "degraded"
    assert health["couchdb"] == {"reachable": True, "flavour": "couchdb"}
    assert health["replications"] == [
        {
            "id": "messages-from-node2",
            "source": "http://couchdb-2:5984/messages/",
            "target": "http://couchdb-1:5984/messages/",
            "state": "running",
        },
        {
            "id": "messages-from-node3",
            "source": "http://couchdb-3:5984/messages/",
            "target": "http://couchdb-1:5984/messages/",
            "state": "crashing",
        },
    ]


async def test_concurrent_messages_while_couchdb_is_down_all_get_503_and_none_is_lost_after(
    start_node, private_couchdb, database, master_token
):
    node = await start_node(private_couchdb)
    private_couchdb.stop()
    bodies = [message_body() for _ in range(10)]
    down = await asyncio.gather(
        *(node.post("/messages", json=body, headers=bearer(master_token)) for body in bodies)
    )
    assert {response.status for response in down} == {503}
    private_couchdb.start()
    again = await asyncio.gather(
        *(node.post("/messages", json=body, headers=bearer(master_token)) for body in bodies)
    )
    assert {response.status for response in again} == {201}
    assert private_couchdb.all_ids(database) == {body["id"] for body in bodies}
