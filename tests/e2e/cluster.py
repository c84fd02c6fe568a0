"""The whole system on 127.0.0.1 for tests: standard nodes and a master on real sockets.

The CouchDB servers are real pouchdb-server processes (tests.support.pouchdb); the
standard nodes and the master are aiohttp apps in the test's own event loop, each
listening on a real TCP port, so clients reach them exactly as they would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from kuno.master.app import create_app as create_master
from kuno.master.config import MasterSettings
from kuno.standard.app import create_app as create_standard
from kuno.standard.config import StandardSettings
from tests.support.pouchdb import PouchServer, credentials_for, free_port, http_json
from tests.support.schema import apply_schema
from tests.support.system import SystemUnderTest

# Cheap argon2 for tests: the hashing itself is argon2-cffi's, the cost is configuration.
FAST_PASSWORDS: dict[str, Any] = {
    "password_time_cost": 1,
    "password_memory_kib": 1024,
    "password_parallelism": 1,
}


def unique(name: str) -> str:
    """A username no other test uses (the users database is shared by the session)."""
    return f"{name}-{secrets.token_hex(4)}"


class RunningApp:
    """An aiohttp app on a real 127.0.0.1 port; stop() and start() again keep the port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runner: web.AppRunner | None = None

    async def start(self, app: web.Application) -> RunningApp:
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self.runner is not None


class BlackHole:
    """A TCP server that accepts connections and never answers: a hung node."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> BlackHole:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass

        self._server = await asyncio.start_server(swallow, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def replicate_full_mesh(servers: list[PouchServer], databases: Iterable[str]) -> None:
    """Create each database on every server and pull it from every other: N·(N-1) each."""
    for db in databases:
        for server in servers:
            server.create_db(db)
        for target in servers:
            for source in servers:
                if source is not target:
                    target.replicate_from(source, db)


def couchdb_credentials(urls: list[str]) -> dict[str, Any]:
    """KUNO_COUCHDB_USER/_PASSWORD for services on these test servers (one admin for all)."""
    known = {credentials_for(url) for url in urls} - {None}
    if len(known) != 1:
        return {}
    [(user, password)] = known
    return {"couchdb_user": user, "couchdb_password": password}


def standard_settings(
    server: PouchServer, name: str, database: str, public_key_file: Path
) -> StandardSettings:
    """A node's settings on `server`, whose `database` gets the deployment's schema first."""
    apply_schema(server.url, messages=database)
    return StandardSettings(
        node_name=name,
        couchdb_url=server.url,
        couchdb_user=server.user,
        couchdb_password=server.password,
        database=database,
        token_public_key_file=public_key_file,
        sweep_interval=3600,
    )


def master_settings(
    couchdb_urls: list[str],
    node_urls: list[str],
    users_database: str,
    private_key_file: Path,
    **overrides: Any,
) -> MasterSettings:
    """The master's settings; the CouchDB credentials are the admin's of the servers.

    `couchdb_urls` are servers' `url`s (every test server has the same admin); give
    `couchdb_user`/`couchdb_password` in overrides to try others.
    """
    values: dict[str, Any] = {
        "couchdb_urls": couchdb_urls,
        **couchdb_credentials(couchdb_urls),
        "standard_node_urls": node_urls,
        "users_database": users_database,
        "token_private_key_file": private_key_file,
        "couchdb_timeout": 2.0,
        "store_timeout": 2.0,
        "shutdown_timeout": 5.0,
        **FAST_PASSWORDS,
    }
    values.update(overrides)
    return MasterSettings(**values)


class Cluster(SystemUnderTest):
    """N standard nodes (node1...) on N CouchDB servers and one master, all on 127.0.0.1."""

    def __init__(
        self,
        servers: list[PouchServer],
        messages_db: str,
        users_db: str,
        public_key_file: Path,
        private_key_file: Path,
    ) -> None:
        self.servers = servers
        self.messages_db = messages_db
        self.users_db = users_db
        self.public_key_file = public_key_file
        self.private_key_file = private_key_file
        self.apps = [RunningApp() for _ in servers]
        self.nodes = [f"node{index + 1}" for index in range(len(servers))]
        self.master = RunningApp()

    @property
    def base_url(self) -> str:
        return self.master.url

    @property
    def node_urls(self) -> list[str]:
        return [app.url for app in self.apps]

    async def start_node(self, index: int) -> None:
        settings = standard_settings(
            self.servers[index], self.nodes[index], self.messages_db, self.public_key_file
        )
        await self.apps[index].start(create_standard(settings))

    async def stop_node(self, index: int) -> None:
        await self.apps[index].stop()

    async def start(self, **master_overrides: Any) -> Cluster:
        for index in range(len(self.apps)):
            await self.start_node(index)
        await self.start_master(**master_overrides)
        return self

    async def start_master(self, **overrides: Any) -> None:
        """The master (again) on every server and node, with `overrides` of its settings."""
        settings = master_settings(
            [server.url for server in self.servers],
            self.node_urls,
            self.users_db,
            self.private_key_file,
            **overrides,
        )
        await self.master.start(create_master(settings))

    async def stop(self) -> None:
        await self.master.stop()
        for app in self.apps:
            await app.stop()

    def _server(self, node: str) -> PouchServer:
        return self.servers[self.nodes.index(node)]

    def holds(self, node: str, message_id: str) -> bool:
        url = f"{self._server(node).db_url(self.messages_db)}/{message_id}"
        return http_json("GET", url)[0] == 200

    def message_ids(self, node: str) -> set[str]:
        status, body = http_json("GET", f"{self._server(node).db_url(self.messages_db)}/_all_docs")
        assert status == 200, body
        return {row["id"] for row in body["rows"] if not row["id"].startswith("_design/")}
