"""The couchdb role applies the one schema (apps/common/schema.json) that the services
check: check mode writes nothing, a run leaves nothing for the services' check to miss, a
rerun changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from kuno.common.couch import CouchClient
from kuno.common.schema import SCHEMA, missing
from tests.modules.helpers import REPO, Ansible
from tests.support.pouchdb import PouchServer, http_json

COUCHDB_ROLE = str(REPO / "roles" / "couchdb")


def schema_task(server: PouchServer) -> dict[str, Any]:
    """The couchdb role's databases.yml against server, with the role's default databases."""
    return {
        "name": "schema",
        "ansible.builtin.include_role": {"name": COUCHDB_ROLE, "tasks_from": "databases.yml"},
        "vars": {
            "couchdb_host_url": server.url,
            "couchdb_admin_user": server.user,
            "couchdb_admin_password": server.password,
        },
    }


def services_find_missing(server: PouchServer) -> list[str]:
    """What the services' start-up check finds missing, over every database of the schema."""

    async def check() -> list[str]:
        async with aiohttp.ClientSession() as session:
            client = CouchClient(session, server.url, server.user, server.password)
            found = [await missing(client, database) for database in SCHEMA.databases]
        return [line for lines in found for line in lines]

    return asyncio.run(check())


def test_the_couchdb_role_applies_the_schema_the_services_check(
    ansible: Ansible, private_couchdb: PouchServer
) -> None:
    everything = services_find_missing(private_couchdb)
    assert everything == [
        line
        for database in SCHEMA.databases
        for line in [
            f"database {database.name}",
            *(f"index {index.name} of {database.name}" for index in database.indexes),
            *(f"design {design.id} of {database.name}" for design in database.designs),
        ]
    ]

    run = ansible.run([schema_task(private_couchdb)], check=True)

    assert run.returncode == 0, run.output
    indexes = run[f"{COUCHDB_ROLE} : Create the indexes"]["results"]
    assert [(r["item"][0]["name"], r["item"][1]["name"], r["changed"]) for r in indexes] == [
        (database.name, index.name, True)
        for database in SCHEMA.databases
        for index in database.indexes
    ]
    designs = run[f"{COUCHDB_ROLE} : Create the design documents"]["results"]
    assert [(r["item"][0]["name"], r["item"][1]["ddoc"], r["changed"]) for r in designs] == [
        (database.name, design.ddoc, True)
        for database in SCHEMA.databases
        for design in database.designs
    ]
    assert designs, "the schema has design documents"
    assert services_find_missing(private_couchdb) == everything

    run = ansible.run([schema_task(private_couchdb)])

    assert run.returncode == 0, run.output
    assert services_find_missing(private_couchdb) == []
    for database in SCHEMA.databases:
        assert http_json("GET", private_couchdb.db_url(database.name) + "/_security") == (
            200,
            SCHEMA.security,
        )

    run = ansible.run([schema_task(private_couchdb)])

    assert run.returncode == 0, run.output
    assert run.stats["changed"] == 0
