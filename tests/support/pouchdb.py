"""Real pouchdb-server processes on free 127.0.0.1 ports with their own data directories."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
POUCHDB_BIN = REPO / "images" / "pouchdb-server" / "node_modules" / ".bin" / "pouchdb-server"
# Preloaded as in the image: a replication survives a peer that goes away (see the file).
POUCHDB_PRELOAD = REPO / "images" / "pouchdb-server" / "docker-entrypoint.js"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A blocking JSON request, for set-up and assertions outside the event loop."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Accept": "application/json", "Content-Type": "application/json"}
        | (headers or {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class PouchServer:
    """One pouchdb-server process. `stop()` and `start()` again keep port and data."""

    def __init__(
        self, workdir: Path, name: str = "couchdb", env: dict[str, str] | None = None
    ) -> None:
        if not POUCHDB_BIN.exists():
            raise RuntimeError(f"{POUCHDB_BIN} is missing: run `make pouchdb`")
        self.name = name
        self.workdir = workdir
        # Added to this process's environment, e.g. a docker-entrypoint.js setting.
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PouchServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.json"
        if not config.exists():
            # As the image runs it: no line per request (see docker-entrypoint.js).
            config.write_text(json.dumps({"log": {"level": "warning"}}))
        log = (self.workdir / "server.log").open("ab")
        self._process = subprocess.Popen(
            [
                shutil.which("node") or "node",
                "--require",
                str(POUCHDB_PRELOAD),
                str(POUCHDB_BIN),
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir / "data"),
                "--config",
                str(self.workdir / "config.json"),
                "--host",
                "127.0.0.1",
            ],
            cwd=self.workdir,
            env=os.environ | self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        (self.workdir / "data").mkdir(exist_ok=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.workdir / 'server.log'}")
            try:
                status, _ = http_json("GET", self.url + "/", timeout=1.0)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT} s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- conveniences for tests -----------------------------------------------

    def db_url(self, db: str) -> str:
        return f"{self.url}/{db}"

    def create_db(self, db: str) -> None:
        status, body = http_json("PUT", self.db_url(db))
        assert status in (201, 412), body

    def replicate_from(self, source: PouchServer, db: str, doc_id: str | None = None) -> str:
        """A continuous pull replication of `db` from source into this server."""
        doc_id = doc_id or f"{db}-from-{source.port}"
        status, body = http_json(
            "PUT",
            f"{self.url}/_replicator/{doc_id}",
            {"source": source.db_url(db), "target": self.db_url(db), "continuous": True},
        )
        assert status in (201, 202), body
        return doc_id

    def all_ids(self, db: str) -> set[str]:
        status, body = http_json("GET", self.db_url(db) + "/_all_docs")
        assert status == 200, body
        return {row["id"] for row in body["rows"] if not row["id"].startswith("_design/")}


@contextlib.contextmanager
def running(*servers: PouchServer, db: str) -> Iterator[tuple[PouchServer, ...]]:
    """The servers started, each with `db` created; destroyed (data too) afterwards."""
    try:
        for server in servers:
            server.start()
            server.create_db(db)
        yield servers
    finally:
        for server in servers:
            server.destroy()


def wait_until(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; returns its value or fails with the last one."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, f"condition not met within {timeout} s"
    return value


async def eventually(predicate: Any, within: float = 15.0, interval: float = 0.05) -> Any:
    """wait_until for async tests: the predicate may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value or time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)
    assert value, f"condition not met within {within} s"
    return value
