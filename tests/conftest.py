"""Fixtures: real pouchdb-server processes, token keys, standard-node apps."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kuno.common.tokens import STORE_SCOPE, TokenSigner, generate_key_pair, load_private_key
from tests.support.pouchdb import PouchServer

_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def couchdb_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PouchServer]]:
    """Three servers shared by the session; each test uses databases of its own."""
    root = tmp_path_factory.mktemp("pouchdb")
    servers = [PouchServer(root / f"couchdb-{i}", f"couchdb-{i}") for i in (1, 2, 3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def couchdb(couchdb_cluster: list[PouchServer]) -> PouchServer:
    return couchdb_cluster[0]


@pytest.fixture
def private_couchdb(tmp_path: Path) -> Iterator[PouchServer]:
    """A server of this test's own, for tests that stop and restart it."""
    server = PouchServer(tmp_path / "couchdb", "private-couchdb").start()
    yield server
    server.stop()


@pytest.fixture
def database() -> str:
    """A database name no other test uses."""
    return f"messages_{next(_db_numbers)}"


@pytest.fixture(scope="session")
def key_pair() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture(scope="session")
def public_key_file(
    tmp_path_factory: pytest.TempPathFactory, key_pair: tuple[bytes, bytes]
) -> Path:
    path = tmp_path_factory.mktemp("keys") / "token-public.pem"
    path.write_bytes(key_pair[1])
    return path


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
    servers = (
        PouchServer(tmp_path / "couchdb-a", "couchdb-a").start(),
        PouchServer(tmp_path / "couchdb-b", "couchdb-b").start(),
    )
    yield servers
    for server in servers:
        server.stop()
