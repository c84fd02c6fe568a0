"""Module-test fixtures: two real pouchdb-server processes and an ansible-playbook runner."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.modules.helpers import LIBRARY, Ansible, PlaybookRun
from tests.support.pouchdb import (
    EXTERNAL,
    CouchServer,
    PouchServer,
    credentials_for,
    http_json,
    skip_if_external,
)

# A user of the source server whose password has characters a URL must escape.
REPLICATION_USER = "replicator"
REPLICATION_PASSWORD = "pa ss/w@rd:%-kuno-7f3a"

_names = itertools.count(1)


def add_user(server: CouchServer, name: str, password: str) -> None:
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


def add_admin(server: CouchServer, name: str, password: str) -> None:
    """A server admin: what the deployment's replication user is (CouchDB 3's config API,
    or pouchdb-server's older path)."""
    for path in ("/_node/_local/_config", "/_config"):
        status, body = http_json("PUT", f"{server.url}{path}/admins/{name}", password)
        if status == 200:
            return
    raise AssertionError(f"{server.name} made no admin {name}: {status} {body}")


def remove_admin(server: CouchServer, name: str) -> None:
    for path in ("/_node/_local/_config", "/_config"):
        if http_json("DELETE", f"{server.url}{path}/admins/{name}")[0] == 200:
            return


def remove_user(server: CouchServer, name: str) -> None:
    url = f"{server.url}/_users/org.couchdb.user:{name}"
    status, body = http_json("GET", url)
    if status == 200:
        http_json("DELETE", f"{url}?rev={body['_rev']}")


@pytest.fixture(scope="session")
def pouch_pair(
    work_root: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[CouchServer, CouchServer]]:
    """Two servers for the whole module suite; each test uses names of its own.

    With KUNO_TEST_COUCHDB_URLS, the first two of those (their test-made databases and
    replications removed by the couchdb_cluster fixtures, the replication user here).
    """
    if EXTERNAL is not None:
        cluster = request.getfixturevalue("couchdb_cluster")
        pair = (cluster[0], cluster[1])
        try:
            for server in pair:
                add_user(server, REPLICATION_USER, REPLICATION_PASSWORD)
                add_admin(server, REPLICATION_USER, REPLICATION_PASSWORD)
            yield pair
        finally:
            for server in pair:
                remove_admin(server, REPLICATION_USER)
                remove_user(server, REPLICATION_USER)
        return
    servers = (PouchServer(work_root / "one", "one"), PouchServer(work_root / "two", "two"))
    try:
        for server in servers:
            server.start()
            add_user(server, REPLICATION_USER, REPLICATION_PASSWORD)
            # Databases are admin-only, as on CouchDB 3: the replication user is an admin.
            add_admin(server, REPLICATION_USER, REPLICATION_PASSWORD)
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
    skip_if_external("tolerant_pouch (a pouchdb-server process)")
    monkeypatch.setenv("NODE_OPTIONS", "--unhandled-rejections=warn")
    server = PouchServer(test_dir / "tolerant", "tolerant").start()
    monkeypatch.delenv("NODE_OPTIONS")
    add_user(server, REPLICATION_USER, REPLICATION_PASSWORD)
    add_admin(server, REPLICATION_USER, REPLICATION_PASSWORD)
    yield server
    server.stop()


COUCHDB_MODULES = frozenset(path.stem for path in LIBRARY.glob("couchdb_*.py"))


def with_admin(task: dict[str, Any]) -> dict[str, Any]:
    """The task with the admin's user and password of its `url`'s test server, as a
    playbook passes couchdb_admin_password; a task that names a user is left as it is."""
    for module in COUCHDB_MODULES & task.keys():
        args = task[module]
        credentials = credentials_for(args.get("url", "")) if isinstance(args, dict) else None
        if credentials and "user" not in args and "password" not in args:
            user, password = credentials
            return {**task, module: {**args, "user": user, "password": password}}
    return task


class AdminAnsible(Ansible):
    """ansible-playbook whose couchdb_* tasks authenticate as the test servers' admin.

    A playbook file gets the admin as the modules' module_defaults (every test server
    has the same admin).
    """

    def __init__(self, workdir: Path, admin: tuple[str, str]) -> None:
        super().__init__(workdir)
        self.admin = admin

    def run(
        self,
        tasks: list[dict[str, Any]] | None = None,
        *,
        playbook: Path | None = None,
        **options: Any,
    ) -> PlaybookRun:
        if playbook is None:
            return super().run([with_admin(task) for task in tasks or []], **options)
        user, password = self.admin
        plays = yaml.safe_load(playbook.read_text())
        defaults = {module: {"user": user, "password": password} for module in COUCHDB_MODULES}
        for play in plays:
            play["module_defaults"] = {**defaults, **play.get("module_defaults", {})}
        authenticated = self.workdir / f"admin-{playbook.name}"
        authenticated.write_text(json.dumps(plays, indent=2))  # JSON is YAML
        return super().run(playbook=authenticated, **options)


@pytest.fixture(scope="session")
def ansible(work_root: Path, pouch_pair: tuple[CouchServer, CouchServer]) -> Ansible:
    return AdminAnsible(work_root / "ansible", (pouch_pair[0].user, pouch_pair[0].password))


@pytest.fixture
def name() -> str:
    """A database or document name no other test uses."""
    return f"kuno_mod_{next(_names)}"
