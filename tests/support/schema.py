"""The deployment's CouchDB schema applied to a test server, as roles/couchdb does it.

Production code never creates a database or an index: the deployment owns the schema
(apps/common/schema.json, applied by roles/couchdb's databases.yml). Tests and
benchmarks that start services against their own servers apply the same definition here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient

from kuno.common.schema import SCHEMA
from tests.support.pouchdb import eventually, http_json


def apply_schema(server_url: str, **names: str) -> None:
    """Create the schema's databases on the server at `server_url` (a `server.url`),
    admin-only with the schema's `_security`, their indexes and design documents;
    idempotent.

    `names` maps a schema database to the name it has here (`messages="messages_3"`):
    with names, only those databases; without, every one under its deployed name.
    Asserts CouchDB 3's answers: `PUT /db` 201 (or 412, it exists), `PUT _security` 200,
    `POST /db/_index` 200 (`created` or `exists`), `PUT /db/_design/x` 201 unless the
    design document is already the schema's.
    """
    unknown = set(names) - {database.name for database in SCHEMA.databases}
    assert not unknown, f"no such database in the schema: {sorted(unknown)}"
    for database in SCHEMA.databases:
        if names and database.name not in names:
            continue
        url = f"{server_url}/{quote(names.get(database.name, database.name), safe='')}"
        status, body = http_json("PUT", url)
        assert status in (201, 202, 412), body
        status, body = http_json("PUT", url + "/_security", SCHEMA.security)
        assert status == 200, body
        for index in database.indexes:
            status, body = http_json("POST", url + "/_index", index.definition())
            assert status == 200 and body.get("result") in ("created", "exists"), body
        for design in database.designs:
            status, current = http_json("GET", f"{url}/{design.id}")
            assert status in (200, 404), current
            if not design.matches(current):
                rev = {"_rev": current["_rev"]} if status == 200 else {}
                status, body = http_json("PUT", f"{url}/{design.id}", design.document() | rev)
                assert status in (201, 202), body


async def health_once_ready(service: TestClient, within: float = 10.0) -> Any:
    """The service's `/health` body once it answers 200 (a service that lacked the schema
    checks it again every few seconds); fails after `within` seconds."""

    async def ready() -> Any:
        response = await service.get("/health")
        return await response.json() if response.status == 200 else None

    return await eventually(ready, within=within)
