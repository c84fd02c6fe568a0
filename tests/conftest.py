"""Fixtures: the CouchDB servers (pouchdb-server processes or real CouchDB 3), token keys.

With KUNO_TEST_COUCHDB_URLS set, `couchdb_cluster` is those servers: each test's new
databases and replications are removed after it, the session's after the session;
fixtures and tests that must stop a server, and tests marked `standin`, are skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kuno.common.tokens import STORE_SCOPE, TokenSigner, generate_key_pair, load_private_key
from tests.support.pouchdb import (
    EXTERNAL,
    EXTERNAL_URLS_VARIABLE,
    RUN_PREFIX,
    CouchServer,
    ExternalCouchDB,
    PouchServer,
    skip_if_external,
)

_db_numbers = itertools.count(1)
CLUSTER_SIZE = 3


def pytest_configure(config: pytest.Config) -> None:
    if EXTERNAL is None:
        return
    if len(EXTERNAL) < CLUSTER_SIZE:
        raise pytest.UsageError(f"{EXTERNAL_URLS_VARIABLE} must name {CLUSTER_SIZE} servers")
    # The master has one CouchDB user and password for all its servers, as deployed.
    if len({(server.user, server.password) for server in EXTERNAL}) != 1:
        raise pytest.UsageError(f"{EXTERNAL_URLS_VARIABLE}: give every server the same admin")


def pytest_report_header() -> str:
    if EXTERNAL is None:
        return "CouchDB servers: pouchdb-server 4.2.0 processes (the stand-in)"
    return f"CouchDB servers ({EXTERNAL_URLS_VARIABLE}): " + ", ".join(s.url for s in EXTERNAL)


#: Fixtures that deploy on the Docker engine: a test using one is a `docker` test.
DOCKER_FIXTURES = frozenset({"deployment", "molecule_env"})
#: The xdist group of every `docker` test (`make test` runs `-n 2 --dist loadgroup`): they
#: run one after another, in collection order, on one worker, sharing tests/deploy's one
#: deployment and the engine; the Docker-free tests run beside them on the other worker.
DOCKER_GROUP = "docker"


def uses_docker(item: pytest.Item) -> bool:
    """A test that needs the Docker engine: marked `docker` or using a deploying fixture."""
    return item.get_closest_marker("docker") is not None or bool(
        DOCKER_FIXTURES & set(getattr(item, "fixturenames", ()))
    )


# Marked as each item is collected: xdist's own pytest_collection_modifyitems, which reads
# the xdist_group marks into the node ids (loadgroup), ran before a tryfirst one of ours
# (every Docker test was spread over both workers, each deploying).
def pytest_itemcollected(item: pytest.Item) -> None:
    if uses_docker(item):
        item.add_marker(pytest.mark.docker)
        item.add_marker(pytest.mark.xdist_group(DOCKER_GROUP))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if EXTERNAL is None:
        return
    skip = pytest.mark.skip(
        reason=f"stand-in (pouchdb-server) behaviour; {EXTERNAL_URLS_VARIABLE} is set"
    )
    for item in items:
        if item.get_closest_marker("standin"):
            item.add_marker(skip)


class Leftovers:
    """What a run adds to external servers: removed again, replications first."""

    def __init__(self, servers: list[ExternalCouchDB]) -> None:
        self.servers = servers
        self.databases = [server.database_names() for server in servers]
        self.replications = [server.replication_ids() for server in servers]

    def remove(self) -> None:
        for server, before in zip(self.servers, self.replications, strict=True):
            for doc_id in server.replication_ids() - before:
                server.remove_replication(doc_id)
        for server, before in zip(self.servers, self.databases, strict=True):
            for db in server.database_names() - before:
                server.delete_db(db)


@pytest.fixture(scope="session")
def couchdb_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[CouchServer]]:
    """Three servers shared by the session; each test uses databases of its own."""
    if EXTERNAL is not None:
        servers = [server.start() for server in EXTERNAL[:CLUSTER_SIZE]]
        leftovers = Leftovers(servers)
        try:
            yield list(servers)
        finally:
            leftovers.remove()
        return
    root = tmp_path_factory.mktemp("pouchdb")
    pouch_servers = [PouchServer(root / f"couchdb-{i}", f"couchdb-{i}") for i in (1, 2, 3)]
    try:
        for server in pouch_servers:
            server.start()
        yield list(pouch_servers)
    finally:
        for server in pouch_servers:
            server.stop()


@pytest.fixture(autouse=True)
def _remove_what_the_test_made(request: pytest.FixtureRequest) -> Iterator[None]:
    """Real-CouchDB mode: the databases and replications a test made go after it."""
    if EXTERNAL is None:
        yield
        return
    leftovers = Leftovers(request.getfixturevalue("couchdb_cluster"))
    yield
    leftovers.remove()


@pytest.fixture
def couchdb(couchdb_cluster: list[PouchServer]) -> PouchServer:
    return couchdb_cluster[0]


@pytest.fixture
def private_couchdb(tmp_path: Path) -> Iterator[PouchServer]:
    """A server of this test's own, for tests that stop and restart it."""
    skip_if_external("private_couchdb")
    server = PouchServer(tmp_path / "couchdb", "private-couchdb").start()
    yield server
    server.stop()


@pytest.fixture
def database() -> str:
    """A database name no other test uses."""
    return f"messages_{RUN_PREFIX}{next(_db_numbers)}"


@pytest.fixture(scope="session")
def key_pair() -> tuple[bytes, bytes]:
    return generate_key_pair()


def _key_file(tmp_path_factory: pytest.TempPathFactory, name: str, pem: bytes) -> Path:
    """`pem` written, owner-only, to `name` in a directory of its own."""
    path = tmp_path_factory.mktemp("keys") / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def public_key_file(
    tmp_path_factory: pytest.TempPathFactory, key_pair: tuple[bytes, bytes]
) -> Path:
    return _key_file(tmp_path_factory, "token-public.pem", key_pair[1])


@pytest.fixture(scope="session")
def private_key_file(
    tmp_path_factory: pytest.TempPathFactory, key_pair: tuple[bytes, bytes]
) -> Path:
    return _key_file(tmp_path_factory, "token-private.pem", key_pair[0])


@pytest.fixture(scope="session")
def signer(key_pair: tuple[bytes, bytes]) -> TokenSigner:
    return TokenSigner(load_private_key(key_pair[0]), audience="kuno", ttl=300)


@pytest.fixture
def master_token(signer: TokenSigner) -> str:
    # Minted for each test: a session-long token would expire in a long run.
    return signer.sign("master", scopes=(STORE_SCOPE,))


@pytest.fixture(scope="session")
def user_token(signer: TokenSigner) -> Callable[[str], str]:
    return lambda user_id: signer.sign(user_id)


@pytest.fixture
def server_pair(tmp_path: Path) -> Iterator[tuple[PouchServer, PouchServer]]:
    """Two servers of this test's own, for tests that replicate between them.

    Their replications die with them: deleting a running replication's document
    would kill pouchdb-server (DESIGN.md).
    """
    skip_if_external("server_pair")
    servers = (
        PouchServer(tmp_path / "couchdb-a", "couchdb-a").start(),
        PouchServer(tmp_path / "couchdb-b", "couchdb-b").start(),
    )
    yield servers
    for server in servers:
        server.stop()
