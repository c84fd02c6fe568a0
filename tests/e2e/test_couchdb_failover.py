"""The master keeps accounts working while a CouchDB server is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from kuno.client.api import KunoClient
from kuno.client.crypto import KeyPair
from kuno.master.app import create_app
from tests.e2e.cluster import RunningApp, master_settings, replicate_full_mesh, unique
from tests.e2e.conftest import PASSWORD
from tests.support.pouchdb import PouchServer, eventually, http_json

pytestmark = pytest.mark.standin

USERS_DB = "users"


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[list[PouchServer]]:
    """Three servers of this test's own: it stops one, which shared ones must not see."""
    servers = [PouchServer(tmp_path / f"couchdb-{i}", f"couchdb-{i}") for i in (1, 2, 3)]
    try:
        for server in servers:
            server.start()
        replicate_full_mesh(servers, [USERS_DB])
        yield servers
    finally:
        for server in servers:
            server.stop()


def has_user(server: PouchServer, username: str) -> bool:
    return http_json("GET", f"{server.db_url(USERS_DB)}/{username}")[0] == 200


async def test_couchdb_node_1_down_register_and_login_still_work(
    own_servers: list[PouchServer], private_key_file: Path
) -> None:
    settings = master_settings(
        [server.url for server in own_servers],
        [],
        USERS_DB,
        private_key_file,
        storage_enabled=False,
    )
    master = await RunningApp().start(create_app(settings))
    try:
        async with KunoClient(master.url) as client:
            alice = unique("alice")
            await client.register(alice, PASSWORD, KeyPair.generate())
            await eventually(lambda: all(has_user(s, alice) for s in own_servers), within=15)

            own_servers[0].stop()
            assert await client.login(alice, PASSWORD)
            bob = unique("bob")
            await client.register(bob, PASSWORD, KeyPair.generate())
            assert await client.login(bob, PASSWORD)
            assert await client.public_key(alice)
            assert has_user(own_servers[1], bob) or has_user(own_servers[2], bob)

            async with aiohttp.ClientSession() as session:
                async with session.get(f"{master.url}/health") as response:
                    health = await response.json()
            assert response.status == 200
            assert health["status"] == "degraded"
            assert [c["reachable"] for c in health["couchdb"]] == [False, True, True]
    finally:
        await master.stop()
