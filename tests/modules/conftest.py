"""Module-test fixtures: two real pouchdb-server processes and an ansible-playbook runner."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.modules.helpers import Ansible
from tests.support.pouchdb import PouchServer, http_json

# A user of the source server whose password has characters a URL must escape.
REPLICATION_USER = "replicator"
REPLICATION_PASSWORD = "pa ss/w@rd:%-kuno-7f3a"

_names = itertools.count(1)


def add_user(server: PouchServer, name: str, password: str) -> None:
    status, body = http_json(
        "PUT",
        f"{server.url}/_users/org.couchdb.user:{name}",
        {"name": name, "password": password, "roles": [], "type": "user"},
    )
    assert status in (201, 409), body


@pytest.fixture(scope="session")
def pouch_pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PouchServer, PouchServer]]:
    """Two servers for the whole module suite; each test uses names of its own."""
    root = tmp_path_factory.mktemp("module-pouchdb")
    servers = (PouchServer(root / "one", "one"), PouchServer(root / "two", "two"))
    try:
        for server in servers:
            server.start()
            add_user(server, REPLICATION_USER, REPLICATION_PASSWORD)
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def one(pouch_pair: tuple[PouchServer, PouchServer]) -> PouchServer:
    assert pouch_pair[0].running, "server one died in an earlier test"
    return pouch_pair[0]


@pytest.fixture
def two(pouch_pair: tuple[PouchServer, PouchServer]) -> PouchServer:
    assert pouch_pair[1].running, "server two died in an earlier test"
    return pouch_pair[1]


@pytest.fixture
def private_pouch(tmp_path: Path) -> Iterator[PouchServer]:
    """A server of this test's own, for tests that may leave its replicator busy."""
    server = PouchServer(tmp_path / "private", "private").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> Ansible:
    return Ansible(tmp_path_factory.mktemp("ansible"))


@pytest.fixture
def name() -> str:
    """A database or document name no other test uses."""
    return f"kuno_mod_{next(_names)}"
