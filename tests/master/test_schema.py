"""The deployment owns the schema: the master only checks the users database on each
CouchDB, and is not ready while none has it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kuno.client.crypto import KeyPair
from kuno.master.app import create_app
from tests.e2e.cluster import master_settings
from tests.master.conftest import PASSWORD
from tests.support.pouchdb import PouchServer, http_json
from tests.support.schema import apply_schema, health_once_ready


async def test_a_master_without_the_users_database_is_not_ready_names_it_and_is_once_applied(
    aiohttp_client: Any,
    couchdb: PouchServer,
    database: str,
    private_key_file: Path,
    caplog: Any,
) -> None:
    caplog.set_level(logging.WARNING, logger="kuno.master")
    users = f"users_{database}"
    settings = master_settings([couchdb.url], [], users, private_key_file, storage_enabled=False)
    master = await aiohttp_client(create_app(settings))

    response = await master.get("/health")
    assert response.status == 503
    health = await response.json()
    assert health["status"] == "down"
    [server] = health["couchdb"]
    assert server["reachable"] is True
    assert server["missing"] == [f"database {users}"]
    logged = [r for r in caplog.records if getattr(r, "missing", None)]
    assert logged and logged[0].missing == [f"{couchdb.url}: database {users}"]
    # Checked, never created: the database is the deployment's to make.
    assert http_json("GET", couchdb.db_url(users))[0] == 404

    apply_schema(couchdb.url, users=users)

    health = await health_once_ready(master)
    assert health["status"] == "ok"
    assert "missing" not in health["couchdb"][0]
    body = {"username": "ada", "password": PASSWORD, "publicKey": KeyPair.generate().public_b64}
    assert (await master.post("/api/register", json=body)).status == 201


async def test_a_master_with_one_server_lacking_the_database_is_degraded_and_names_it(
    aiohttp_client: Any,
    couchdb_cluster: list[PouchServer],
    database: str,
    private_key_file: Path,
) -> None:
    users = f"users_{database}"
    one, two = couchdb_cluster[:2]
    apply_schema(one.url, users=users)
    settings = master_settings(
        [one.url, two.url], [], users, private_key_file, storage_enabled=False
    )
    master = await aiohttp_client(create_app(settings))

    response = await master.get("/health")
    assert response.status == 200
    health = await response.json()
    assert health["status"] == "degraded"
    assert ["missing" in server for server in health["couchdb"]] == [False, True]
    assert health["couchdb"][1]["missing"] == [f"database {users}"]
