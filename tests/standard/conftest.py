"""Standard-node fixtures: an app on a real pouchdb-server, and a way to call it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from kuno.standard.app import create_app
from kuno.standard.config import StandardSettings
from tests.support.pouchdb import PouchServer

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
    async def start(server: PouchServer, **overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_settings(server, **overrides)))

    return start


@pytest.fixture
async def node(
    start_node: Callable[..., Awaitable[TestClient]], couchdb: PouchServer
) -> TestClient:
    return await start_node(couchdb)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
