"""Module-test fixtures: two real pouchdb-server processes and an ansible-playbook runner."""

from __future__ import annotations

import itertools
import shutil
import tempfile
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
def work_root() -> Iterator[Path]:
    """Data directories of servers and playbooks. Not under pytest's basetemp: a concurrent
    pytest run of the same user prunes old basetemps, data directories of running servers too."""
    root = Path(tempfile.mkdtemp(prefix="kuno-module-tests-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def test_dir(work_root: Path, request: pytest.FixtureRequest) -> Path:
    path = work_root / f"{request.node.name[:60]}-{next(_names)}"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def pouch_pair(work_root: Path) -> Iterator[tuple[PouchServer, PouchServer]]:
    """Two servers for the whole module suite; each test uses names of its own."""
    servers = (PouchServer(work_root / "one", "one"), PouchServer(work_root / "two", "two"))
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
def tolerant_pouch(test_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PouchServer]:
    """pouchdb-server under node --unhandled-rejections=warn: a rejected promise is logged."""
    monkeypatch.setenv("NODE_OPTIONS", "--unhandled-rejections=warn")
    server = PouchServer(test_dir / "tolerant", "tolerant").start()
    monkeypatch.delenv("NODE_OPTIONS")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ansible(work_root: Path) -> Ansible:
    return Ansible(work_root / "ansible")


@pytest.fixture
def name() -> str:
    """A database or document name no other test uses."""
    return f"kuno_mod_{next(_names)}"
