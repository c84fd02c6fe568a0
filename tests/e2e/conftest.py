"""End-to-end fixtures: 3 replicated pouchdb-servers, 3 standard nodes, 1 master."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kuno.client.api import KunoClient
from tests.e2e.cluster import Cluster, replicate_full_mesh
from tests.support.pouchdb import RUN_PREFIX, PouchServer

PASSWORD = "correct horse battery"
MESSAGES_DB = f"e2e_{RUN_PREFIX}messages"
USERS_DB = f"e2e_{RUN_PREFIX}users"

UserFactory = Callable[[str], Awaitable[KunoClient]]


@pytest.fixture(scope="session")
def replicated(couchdb_cluster: list[PouchServer]) -> list[PouchServer]:
    """messages and users replicated in a full mesh, set up once: pouchdb-server dies when
    a running replication's document is deleted, so the replications outlive the tests,
    which keep apart by using usernames of their own."""
    replicate_full_mesh(couchdb_cluster, [MESSAGES_DB, USERS_DB])
    return couchdb_cluster


@pytest.fixture
def cluster_options() -> dict[str, Any]:
    """Master settings for this test: override with @pytest.mark.parametrize."""
    return {}


@pytest.fixture
async def cluster(
    replicated: list[PouchServer],
    public_key_file: Path,
    private_key_file: Path,
    cluster_options: dict[str, Any],
) -> AsyncIterator[Cluster]:
    running = Cluster(replicated, MESSAGES_DB, USERS_DB, public_key_file, private_key_file)
    await running.start(**cluster_options)
    yield running
    await running.stop()


@pytest.fixture
async def new_user(cluster: Cluster) -> AsyncIterator[UserFactory]:
    """Register and log in a fresh user; its client is closed after the test."""
    clients: list[KunoClient] = []

    async def make(name: str) -> KunoClient:
        client = await cluster.new_user(name, PASSWORD, node_timeout=2.0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
