"""The watchdog's CouchDB 3 restart, against a faked `_replicator` (the suite's servers are
pouchdb-server, whose restart differs; tests/standard/test_mesh_health.py runs the watchdog
against them): delete and write again without server fields, once per stall window, and
never against an operator's edit."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from kuno.common.couch import CouchClient
from kuno.standard.links import LinkName, LinkStatus, Reading
from kuno.standard.watchdog import Watchdog

DOC_ID = "kuno-messages-from-node2"
DOC = {
    "_id": DOC_ID,
    "_rev": "1-abc",
    "source": "http://kuno-couchdb-node2:5984/messages",
    "target": "http://kuno-couchdb-node1:5984/messages",
    "continuous": True,
    "kuno_credentials": "pbkdf2$…",
}


class FakeReplicator:
    """`_replicator/<id>`: GET, DELETE ?rev=, PUT; `answers` overrides a method's status."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = dict(DOC)
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.Response:
        method = request.method
        body = await request.json() if method == "PUT" else dict(request.query)
        self.calls.append((method, body))
        if method in self.answers:
            return web.json_response({"error": "x", "reason": "y"}, status=self.answers[method])
        if method == "GET":
            if self.doc is None:
                return web.json_response({"error": "not_found"}, status=404)
            return web.json_response(self.doc)
        if method == "DELETE":
            self.doc = None
            return web.json_response({"ok": True})
        self.doc = {**body, "_rev": "3-new"}
        return web.json_response({"ok": True}, status=201)


@pytest.fixture
async def replicator(aiohttp_server: Any) -> Any:
    fake = FakeReplicator()
    app = web.Application()
    app.router.add_route("*", "/_replicator/{doc_id}", fake.handle)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        fake.client = CouchClient(session, str(server.make_url("/")), "admin", "pw")
        yield fake


def stalled(job: str = "r1@t0") -> LinkStatus:
    reading = Reading(doc_id=DOC_ID, state="running", job=job, changes_pending=12)
    return LinkStatus(LinkName("messages", "node2", "node1"), DOC_ID, reading, 0.0, 300.0, True)


def restarts(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value(
        "kuno_replication_watchdog_restarts_total",
        {"database": "messages", "source": "node2", "target": "node1", "outcome": outcome},
    )


async def test_a_stalled_couchdb_link_is_deleted_and_written_again(replicator) -> None:
    registry = CollectorRegistry()
    watchdog = Watchdog(replicator.client, registry, stall_seconds=60)
    assert await watchdog.check([stalled()], "couchdb", now=1000.0) == [DOC_ID]
    assert [method for method, _ in replicator.calls] == ["GET", "DELETE", "PUT"]
    assert replicator.calls[1][1] == {"rev": "1-abc"}
    written = replicator.calls[2][1]
    assert written == {key: value for key, value in DOC.items() if key != "_rev"}
    assert restarts(registry, "restarted") == 1

    # The same stall seen again within the window: nothing more.
    assert await watchdog.check([stalled()], "couchdb", now=1030.0) == []
    assert len(replicator.calls) == 3


async def test_a_link_removed_or_edited_by_an_operator_is_left_alone(replicator) -> None:
    registry = CollectorRegistry()
    watchdog = Watchdog(replicator.client, registry, stall_seconds=60)
    replicator.answers["DELETE"] = 409  # edited since the look
    assert await watchdog.check([stalled()], "couchdb", now=0.0) == []
    replicator.answers.clear()
    replicator.doc = None  # removed by hand
    assert await watchdog.check([stalled("r2@t1")], "couchdb", now=1.0) == []
    assert [method for method, _ in replicator.calls] == ["GET", "DELETE", "GET"]
    assert restarts(registry, "restarted") is None
    assert restarts(registry, "failed") is None


async def test_a_failed_restart_is_counted_and_tried_again_after_a_window(replicator) -> None:
    registry = CollectorRegistry()
    watchdog = Watchdog(replicator.client, registry, stall_seconds=60)
    replicator.answers["DELETE"] = 500
    assert await watchdog.check([stalled()], "couchdb", now=0.0) == []
    assert restarts(registry, "failed") == 1
    assert await watchdog.check([stalled()], "couchdb", now=30.0) == []
    assert restarts(registry, "failed") == 1
    replicator.answers.clear()
    assert await watchdog.check([stalled()], "couchdb", now=61.0) == [DOC_ID]
    assert restarts(registry, "restarted") == 1
