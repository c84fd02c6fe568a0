"""CouchDB 3 lists 100 entries of /_scheduler/docs and /_scheduler/jobs unless a request
names a `limit`: a server with more replications than that must still show every link.

CouchDB 3 is not installable here: the fake answers with the documented shapes and
CouchDB's paging (default limit 100, `limit`/`skip`, `total_rows`), the path
pouchdb-server (no scheduler) cannot exercise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kuno.common import couch
from kuno.standard.links import MISSING, expected_links
from kuno.standard.mesh import MeshMonitor

COUCHDB_DEFAULT_LIMIT = 100
PREFIX = "kuno"
DATABASES = ["messages", "users"]
PEERS = [f"node{n}" for n in range(2, 62)]  # 60 peers, 2 databases: 120 links into node1


def couchdb_3(doc_ids: list[str]) -> web.Application:
    def page(request: web.Request, kind: str, entries: list[dict[str, Any]]) -> web.Response:
        # CouchDB's paging: `limit` entries from `skip`, 100 unless told.
        limit = int(request.query.get("limit", COUCHDB_DEFAULT_LIMIT))
        skip = int(request.query.get("skip", 0))
        return web.json_response(
            {"total_rows": len(entries), "offset": skip, kind: entries[skip : skip + limit]}
        )

    docs = [
        {"database": "_replicator", "doc_id": doc_id, "id": f"job-{n}", "state": "running"}
        for n, doc_id in enumerate(doc_ids)
    ]
    jobs = [
        {
            "database": "_replicator",
            "doc_id": doc_id,
            "id": f"job-{n}",
            "start_time": "2026-12-03T10:00:00Z",
            "info": {"changes_pending": 0, "docs_written": 5, "doc_write_failures": 0},
        }
        for n, doc_id in enumerate(doc_ids)
    ]

    async def welcome(_: web.Request) -> web.Response:
        return web.json_response({"couchdb": "Welcome", "version": "3.5.0"})

    async def database(request: web.Request) -> web.Response:
        return web.json_response(
            {"db_name": request.match_info["db"], "doc_count": 0, "doc_del_count": 0}
        )

    app = web.Application()
    app.router.add_get("/", welcome)

    async def scheduler_docs(request: web.Request) -> web.Response:
        return page(request, "docs", docs)

    async def scheduler_jobs(request: web.Request) -> web.Response:
        return page(request, "jobs", jobs)

    app.router.add_get("/_scheduler/docs", scheduler_docs)
    app.router.add_get("/_scheduler/jobs", scheduler_jobs)
    app.router.add_get("/{db}", database)
    return app


Start = Callable[[web.Application], Awaitable[Any]]


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_node_with_more_than_100_links_sees_every_one_of_them(
    aiohttp_server: Start, session: aiohttp.ClientSession
) -> None:
    links = expected_links("node1", PEERS, DATABASES)
    assert len(links) > COUCHDB_DEFAULT_LIMIT
    server = await aiohttp_server(couchdb_3([link.doc_id(PREFIX) for link in links]))
    client = couch.CouchClient(session, str(server.make_url("")))
    monitor = MeshMonitor(
        client,
        session,
        "node1",
        nodes=len(PEERS) + 1,
        links=links,
        databases=DATABASES,
        id_prefix=PREFIX,
        stall_seconds=60.0,
        timeout=5.0,
    )
    view = await monitor.look()
    assert view.couchdb_up
    missing = [status.doc_id for status in view.links if status.reading.state == MISSING]
    assert missing == []
    assert {status.reading.docs_written for status in view.links} == {5}


async def test_replication_states_lists_every_scheduler_document(
    aiohttp_server: Start, session: aiohttp.ClientSession
) -> None:
    doc_ids = [f"replication-{n:04d}" for n in range(2_345)]
    server = await aiohttp_server(couchdb_3(doc_ids))
    states = await couch.replication_states(couch.CouchClient(session, str(server.make_url(""))))
    assert [state["id"] for state in states] == doc_ids
