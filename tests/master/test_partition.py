"""One name, one registration, whatever partitions do (issue 11 item 2).

Real pouchdb-server processes; a "partition" is the master reaching only some of them
(the others stopped), healed by starting them again and replicating the full mesh.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from kuno.client.crypto import KeyPair
from kuno.common.couch import CouchClient
from kuno.master.app import create_app
from kuno.master.config import MasterSettings
from tests.e2e.cluster import master_settings, replicate_full_mesh
from tests.master.conftest import PASSWORD, bearer
from tests.support.pouchdb import PouchServer, eventually, http_json, running

USERS = "users"
OTHER_PASSWORD = "another password entirely"
Register = Callable[..., Awaitable[tuple[int, dict[str, Any]]]]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[PouchServer]]:
    """Three servers of this test's own (it stops and starts them), `users` on each."""
    own = [PouchServer(tmp_path / f"couchdb-{i}", f"couchdb-{i}") for i in (1, 2, 3)]
    with running(*own, db=USERS):
        yield own


@pytest.fixture
def settings(servers: list[PouchServer], private_key_file: Path) -> MasterSettings:
    return master_settings(
        [server.url for server in servers],
        [],
        USERS,
        private_key_file,
        storage_enabled=False,
        couchdb_timeout=1.0,
    )


@pytest.fixture
async def master(aiohttp_client: Any, settings: MasterSettings) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(settings))


async def register(
    master: TestClient, name: str, password: str = PASSWORD, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    body = {"username": name, "password": password, "publicKey": key or _key()}
    response = await master.post("/api/register", json=body)
    return response.status, await response.json()


async def login(master: TestClient, name: str, password: str) -> tuple[int, dict[str, Any]]:
    response = await master.post("/api/login", json={"username": name, "password": password})
    return response.status, await response.json()


def _key() -> str:
    return KeyPair.generate().public_b64


def live(server: PouchServer, doc_id: str) -> dict[str, Any] | None:
    status, doc = http_json("GET", f"{server.db_url(USERS)}/{doc_id}?conflicts=true")
    return doc if status == 200 else None


def heal(servers: list[PouchServer]) -> None:
    for server in servers:
        if not server.running:
            server.start()
    replicate_full_mesh(servers, [USERS])


async def test_one_name_registered_on_both_sides_of_a_partition_has_one_owner(
    servers: list[PouchServer], master: TestClient
) -> None:
    """The issue's input: carol on one side, carol again on the other, heal."""
    a, b, c = servers
    first_key = _key()
    c.stop()  # the master reaches a and b
    assert await register(master, "carol", PASSWORD, first_key) == (
        201,
        {"username": "carol", "publicKey": first_key},
    )
    a.stop()
    b.stop()
    c.start()  # now it reaches c only
    status, body = await register(master, "carol", OTHER_PASSWORD)
    assert status == 503
    assert body["error"] == "no_majority"
    assert "1 of 3" in body["reason"]
    assert live(c, "carol") is None  # taken back: no ghost to spread
    heal(servers)
    await eventually(lambda: all(live(s, "carol") for s in servers), within=20)
    for server in servers:
        doc = live(server, "carol")
        assert doc is not None
        assert "_conflicts" not in doc
        assert doc["publicKey"] == first_key
    status, body = await login(master, "carol", PASSWORD)
    assert status == 200
    assert (await login(master, "carol", OTHER_PASSWORD))[0] == 401
    response = await master.get("/api/users/carol/key", headers=bearer(body["token"]))
    assert await response.json() == {"username": "carol", "publicKey": first_key}


async def test_two_servers_cut_apart_register_nowhere_until_they_meet(
    tmp_path: Path, aiohttp_client: Any, private_key_file: Path
) -> None:
    """N = 2, the master reaching A, then B: neither side is a majority."""
    a, b = (PouchServer(tmp_path / f"couchdb-{n}", f"couchdb-{n}") for n in "ab")
    try:
        for server in (a, b):
            server.start()
            server.create_db(USERS)
        settings = master_settings(
            [a.url, b.url], [], USERS, private_key_file, storage_enabled=False, couchdb_timeout=1.0
        )
        master = await aiohttp_client(create_app(settings))
        b.stop()
        assert (await register(master, "carol"))[0] == 503
        a.stop()
        b.start()
        assert (await register(master, "carol", OTHER_PASSWORD))[0] == 503
        heal([a, b])
        assert all(live(s, "carol") is None for s in (a, b))
        assert (await register(master, "carol"))[0] == 201
        assert all(live(s, "carol") for s in (a, b))
        assert (await login(master, "carol", PASSWORD))[0] == 200
    finally:
        a.stop()
        b.stop()


async def test_a_majority_registers_a_minority_does_not(
    servers: list[PouchServer], master: TestClient
) -> None:
    a, b, c = servers
    c.stop()
    assert (await register(master, "dave"))[0] == 201  # 2 of 3
    assert live(a, "dave") and live(b, "dave")
    b.stop()
    status, body = await register(master, "erin")  # 1 of 3
    assert (status, body["error"]) == (503, "no_majority")
    assert a.all_ids(USERS) == {"dave"}  # erin's copy was taken back
    assert (await login(master, "erin", PASSWORD))[0] == 401
    assert (await login(master, "dave", PASSWORD))[0] == 200  # reads need one server


async def test_a_server_that_holds_the_name_makes_it_taken_and_nothing_stays(
    servers: list[PouchServer], master: TestClient
) -> None:
    """A copy left on one server (its take-back failed) refuses the name there: 409,
    and the copies this registration wrote elsewhere are deleted again."""
    a, b, c = servers
    ghost = {"type": "user", "username": "frank", "publicKey": _key(), "passwordHash": "x"}
    assert http_json("PUT", f"{c.db_url(USERS)}/frank", ghost)[0] == 201
    status, body = await register(master, "Frank")
    assert (status, body["error"]) == (409, "username_taken")
    assert live(a, "frank") is None
    assert live(b, "frank") is None
    assert live(c, "frank")["passwordHash"] == "x"


def _account(password: str, key: str) -> dict[str, Any]:
    return {
        "type": "user",
        "username": "grace",
        "displayName": "grace",
        "publicKey": key,
        "passwordHash": PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password),
        "createdAt": 1,
    }


def accounts_command(settings: MasterSettings, *args: str) -> tuple[int, Any]:
    env = os.environ | {
        "KUNO_COUCHDB_URLS": json.dumps([str(url) for url in settings.couchdb_urls]),
        "KUNO_USERS_DATABASE": settings.users_database,
        "KUNO_TOKEN_PRIVATE_KEY_FILE": str(settings.token_private_key_file),
        "KUNO_STORAGE_ENABLED": "false",
    }
    if settings.couchdb_user:
        env["KUNO_COUCHDB_USER"] = settings.couchdb_user
        env["KUNO_COUCHDB_PASSWORD"] = settings.couchdb_password_value or ""
    done = subprocess.run(
        [sys.executable, "-m", "kuno.master", "accounts", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else done.stderr


async def test_a_conflicted_account_is_served_to_nobody_until_an_operator_resolves_it(
    servers: list[PouchServer], master: TestClient, settings: MasterSettings
) -> None:
    """Two different documents for one name (written before this fix, or by a take-back
    that failed) meet by replication: login and key lookup refuse with 409
    account_conflict; `kuno-master accounts list` shows it, `resolve` keeps one."""
    a, b, _ = servers
    assert (await register(master, "heidi"))[0] == 201
    token = (await login(master, "heidi", PASSWORD))[1]["token"]
    kept_key, other_key = _key(), _key()
    kept = http_json("PUT", f"{a.db_url(USERS)}/grace", _account(PASSWORD, kept_key))[1]["rev"]
    http_json("PUT", f"{b.db_url(USERS)}/grace", _account(OTHER_PASSWORD, other_key))
    replicate_full_mesh(servers, [USERS])
    await eventually(
        lambda: all(len((live(s, "grace") or {}).get("_conflicts", [])) == 1 for s in servers),
        within=20,
    )
    for password in (PASSWORD, OTHER_PASSWORD):
        status, body = await login(master, "grace", password)
        assert (status, body["error"]) == (409, "account_conflict")
    response = await master.get("/api/users/grace/key", headers=bearer(token))
    assert response.status == 409
    assert (await response.json())["error"] == "account_conflict"

    code, survey = accounts_command(settings, "list")
    assert code == 0, survey
    assert [entry["username"] for entry in survey["conflicts"]] == ["grace"]
    revisions = {r["rev"]: r for r in survey["conflicts"][0]["revisions"]}
    assert revisions[kept]["publicKey"] == kept_key
    assert {r["publicKey"] for r in revisions.values()} == {kept_key, other_key}
    assert all(len(r["servers"]) == 3 for r in revisions.values())

    code, outcome = accounts_command(settings, "resolve", "grace", "--keep", kept)
    assert code == 0, outcome
    assert outcome["unreachable"] == []
    await eventually(lambda: all("_conflicts" not in (live(s, "grace") or {}) for s in servers))
    assert all(live(s, "grace")["_rev"] == kept for s in servers)
    assert (await login(master, "grace", PASSWORD))[0] == 200
    assert (await login(master, "grace", OTHER_PASSWORD))[0] == 401
    response = await master.get("/api/users/grace/key", headers=bearer(token))
    assert await response.json() == {"username": "grace", "publicKey": kept_key}
    assert accounts_command(settings, "list")[1]["conflicts"] == []


async def test_resolve_refuses_a_revision_no_server_holds(
    servers: list[PouchServer], settings: MasterSettings
) -> None:
    http_json("PUT", f"{servers[0].db_url(USERS)}/grace", _account(PASSWORD, _key()))
    code, message = accounts_command(settings, "resolve", "grace", "--keep", "1-nosuchrevision")
    assert code == 2
    assert "no server that answered holds revision 1-nosuchrevision" in message
    assert live(servers[0], "grace")


def _legacy(name: str, password: str, key: str) -> dict[str, Any]:
    """An account as the master stored it before names were canonical."""
    account = _account(password, key) | {"username": name, "createdAt": 7}
    del account["displayName"]
    return account


async def test_accounts_migrate_copies_legacy_accounts_and_names_collisions(
    servers: list[PouchServer], master: TestClient, settings: MasterSettings
) -> None:
    ivan_key = _key()
    documents = {
        "Ivan": _legacy("Ivan", PASSWORD, ivan_key),
        "Kim": _legacy("Kim", PASSWORD, _key()),
        "kim": _legacy("kim", OTHER_PASSWORD, _key()),
    }
    for server in servers:  # as replication would have left them: one revision each
        for doc_id, doc in documents.items():
            assert http_json("PUT", f"{server.db_url(USERS)}/{doc_id}", doc)[0] == 201
    code, survey = accounts_command(settings, "list")
    assert (code, survey["legacy"], survey["collisions"]) == (0, ["Ivan"], ["Kim"])
    # Before the migration a legacy account logs in under its name as registered...
    assert (await login(master, "Ivan", PASSWORD))[0] == 200
    # ... which migrated it already; the command does the rest, and says so.
    code, outcome = accounts_command(settings, "migrate")
    assert code == 0, outcome
    assert outcome == {
        "migrated": [],
        "canonical": [],
        "collision": ["Kim"],
        "failed": [],
        "unreachable": [],
    }
    for server in servers:
        doc = live(server, "ivan")
        assert doc is not None
        assert (doc["displayName"], doc["publicKey"], doc["migratedFrom"]) == (
            "Ivan",
            ivan_key,
            "Ivan",
        )
    status, body = await login(master, "IVAN", PASSWORD)
    assert (status, body["username"]) == (200, "ivan")
    assert accounts_command(settings, "list")[1]["legacy"] == []


async def test_accounts_migrate_copies_every_legacy_account_to_every_server(
    servers: list[PouchServer], master: TestClient, settings: MasterSettings
) -> None:
    for server in servers:
        for name in ("Lea", "MoE"):
            assert (
                http_json("PUT", f"{server.db_url(USERS)}/{name}", _legacy(name, PASSWORD, "k"))[0]
                == 201
            )
    code, outcome = accounts_command(settings, "migrate")
    assert code == 0, outcome
    assert outcome["migrated"] == ["Lea", "MoE"]
    assert all(live(s, "lea") and live(s, "moe") for s in servers)
    assert (await login(master, "moe", PASSWORD))[1]["username"] == "moe"
    assert accounts_command(settings, "migrate")[1]["canonical"] == []  # nothing left to do


async def test_copies_of_one_account_with_different_histories_are_one_account(
    servers: list[PouchServer], master: TestClient
) -> None:
    """A registration retried after a take-back: the same document gets another revision
    where the take-back's tombstone was; after replication the two leaves hold the same
    account, which is served (and the extra leaf removed), not refused."""
    a, b, _ = servers
    account = _account(PASSWORD, _key())
    taken_back = _account(OTHER_PASSWORD, _key())  # the first attempt, refused
    rev = http_json("PUT", f"{a.db_url(USERS)}/grace", taken_back)[1]["rev"]
    assert http_json("DELETE", f"{a.db_url(USERS)}/grace?rev={rev}")[0] == 200
    assert http_json("PUT", f"{a.db_url(USERS)}/grace", account)[0] == 201
    assert http_json("PUT", f"{b.db_url(USERS)}/grace", account)[0] == 201
    replicate_full_mesh(servers, [USERS])
    await eventually(lambda: all(live(s, "grace") for s in servers), within=20)
    await eventually(lambda: all(live(s, "grace").get("_conflicts") for s in (a, b)), within=20)
    assert (await login(master, "grace", PASSWORD))[0] == 200
    await eventually(lambda: all("_conflicts" not in live(s, "grace") for s in servers), within=20)


async def test_a_registration_that_replication_carries_first_to_a_server_is_still_ours(
    master: TestClient, servers: list[PouchServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replicator may bring this very registration to a slow server before the
    master's own write arrives there: that 409 is our copy, not a rival's name."""
    first, _, slow = servers
    create = CouchClient.create

    async def replicated_first(client: CouchClient, db: str, doc: dict[str, Any]) -> Any:
        if str(client.url) == slow.url:
            await eventually(lambda: http_json("GET", f"{first.db_url(db)}/{doc['_id']}")[0] == 200)
            copy = {
                "source": first.authenticated_db_url(db),
                "target": slow.authenticated_db_url(db),
            }
            status, body = await asyncio.to_thread(
                http_json, "POST", slow.url + "/_replicate", copy | {"doc_ids": [doc["_id"]]}
            )
            assert status == 200, body
        return await create(client, db, doc)

    monkeypatch.setattr(CouchClient, "create", replicated_first)

    assert (await register(master, "dora"))[0] == 201
    assert (await login(master, "dora", PASSWORD))[0] == 200
    assert {http_json("GET", f"{s.db_url(USERS)}/dora")[0] for s in servers} == {200}
