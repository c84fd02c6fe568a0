"""Master fixtures: the app on one real pouchdb-server, storage nodes when a test needs them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from kuno.master.app import create_app
from kuno.master.config import MasterSettings
from kuno.standard.app import create_app as create_standard
from tests.e2e.cluster import RunningApp, master_settings, standard_settings
from tests.support.pouchdb import PouchServer
from tests.support.schema import apply_schema

PASSWORD = "correct horse battery"
MasterFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_master_settings(
    couchdb: PouchServer, database: str, private_key_file: Path
) -> Callable[..., MasterSettings]:
    """Settings on the session's first server, with a users database of this test's own."""

    def make(**overrides: Any) -> MasterSettings:
        values: dict[str, Any] = {"storage_enabled": False}
        values.update(overrides)
        nodes = values.pop("standard_node_urls", [])
        servers = values.pop("couchdb_urls", [couchdb.url])
        for url in servers:
            apply_schema(url, users=f"users_{database}")
        return master_settings(servers, nodes, f"users_{database}", private_key_file, **values)

    return make


@pytest.fixture
async def node(
    couchdb: PouchServer, database: str, public_key_file: Path
) -> AsyncIterator[RunningApp]:
    """One real standard node, `node1`, storing in this test's database on the first server."""
    settings = standard_settings(couchdb, "node1", database, public_key_file)
    running = await RunningApp().start(create_standard(settings))
    yield running
    await running.stop()


@pytest.fixture
def start_master(
    aiohttp_client: Any, make_master_settings: Callable[..., MasterSettings]
) -> MasterFactory:
    async def start(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_master_settings(**overrides)))

    return start


@pytest.fixture
async def master(start_master: MasterFactory) -> TestClient:
    """A master without storage: accounts and WebSocket checks need no node."""
    return await start_master()


async def register(master: TestClient, username: str, public_key: str | None = None) -> str:
    """Register and log in; returns the token."""
    from kuno.client.crypto import KeyPair

    key = public_key or KeyPair.generate().public_b64
    response = await master.post(
        "/api/register", json={"username": username, "password": PASSWORD, "publicKey": key}
    )
    assert response.status == 201, await response.text()
    response = await master.post("/api/login", json={"username": username, "password": PASSWORD})
    assert response.status == 200, await response.text()
    return (await response.json())["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def account(session: aiohttp.ClientSession, master: RunningApp, username: str) -> str:
    """Register `username` on a master served over a real socket and log in; returns the
    token."""
    from kuno.client.crypto import KeyPair

    body = {"username": username, "password": PASSWORD, "publicKey": KeyPair.generate().public_b64}
    async with session.post(f"{master.url}/api/register", json=body) as response:
        assert response.status == 201, await response.text()
    async with session.post(f"{master.url}/api/login", json=body) as response:
        return str((await response.json())["token"])


async def open_socket(
    session: aiohttp.ClientSession, master: RunningApp, token: str
) -> aiohttp.ClientWebSocketResponse:
    """The user's WebSocket, once the master has said `ready`."""
    ws = await session.ws_connect(f"{master.url}/ws", headers=bearer(token))
    assert (await ws.receive_json(timeout=5))["type"] == "ready"
    return ws
