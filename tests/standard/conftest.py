"""Standard-node fixtures: an app on a real pouchdb-server, and a way to call it."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from kuno.standard.app import create_app
from kuno.standard.config import StandardSettings
from tests.support.pouchdb import PouchServer
from tests.support.schema import apply_schema

SettingsFactory = Callable[..., StandardSettings]


@pytest.fixture
def make_settings(public_key_file: Path, database: str) -> SettingsFactory:
    def make(server: PouchServer, **overrides: Any) -> StandardSettings:
        values: dict[str, Any] = {
            "node_name": "node1",
            "couchdb_url": server.url,
            # As deployed: the admin's credentials in KUNO_COUCHDB_USER/_PASSWORD (none
            # for a stand-in object that has only a url).
            "couchdb_user": getattr(server, "user", None),
            "couchdb_password": getattr(server, "password", None),
            "database": database,
            "token_public_key_file": public_key_file,
            "sweep_interval": 3600,
        }
        values.update(overrides)
        return StandardSettings(**values)

    return make


@pytest.fixture
def start_node(
    aiohttp_client: Any, make_settings: SettingsFactory
) -> Callable[..., Awaitable[TestClient]]:
    async def start(server: PouchServer, schema: bool = True, **overrides: Any) -> TestClient:
        """The node on `server`; `schema`: apply the deployment's schema to it first."""
        settings = make_settings(server, **overrides)
        if schema:
            apply_schema(server.url, messages=settings.database)
        return await aiohttp_client(create_app(settings))

    return start


@pytest.fixture
async def node(
    start_node: Callable[..., Awaitable[TestClient]], couchdb: PouchServer
) -> TestClient:
    return await start_node(couchdb)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def node_url(make_settings: SettingsFactory, couchdb: PouchServer) -> Iterator[str]:
    """The node served over real HTTP on 127.0.0.1 from a thread of its own, for tests that
    send raw bytes (percent-encodings as written) or run outside an event loop (hypothesis)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="standard-node", daemon=True)
    thread.start()
    settings = make_settings(couchdb)
    apply_schema(couchdb.url, messages=settings.database)
    runner = web.AppRunner(create_app(settings), access_log=None)

    async def start() -> str:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request with the path sent exactly as given (no re-encoding)."""
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.getheader("Content-Type", ""), response.read())
    finally:
        connection.close()
