"""The tests' CouchDB servers: pouchdb-server processes, or real CouchDB 3 servers.

By default each `PouchServer` is a real pouchdb-server process on a free 127.0.0.1 port
with its own data directory. Like production's CouchDB it has an admin and refuses
anonymous requests to its databases: `ADMIN_USER` with a password made for this test
process. `KUNO_TEST_COUCHDB_URLS` (comma-separated `http://user:password@host:port`)
makes the fixtures use those servers instead (`external_servers()`).

`server.url` and `server.db_url(db)` never carry credentials (the couchdb_* modules
refuse such URLs); `http_json` adds the admin's credentials to every request to a
known server, `server.auth_header` / `server.user` / `server.password` give them to
other clients, and `server.authenticated_db_url(db)` is the form a replication
document takes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
POUCHDB_BIN = REPO / "images" / "pouchdb-server" / "node_modules" / ".bin" / "pouchdb-server"
# Preloaded as in the image: a replication survives a peer that goes away (see the file).
POUCHDB_PRELOAD = REPO / "images" / "pouchdb-server" / "docker-entrypoint.js"
START_TIMEOUT = 30.0

#: The real-CouchDB mode: the URLs, with admin credentials, of the servers to test against.
EXTERNAL_URLS_VARIABLE = "KUNO_TEST_COUCHDB_URLS"
#: The admin of every stand-in; its password is made per test process, never printed.
ADMIN_USER = "admin"
_STANDIN_PASSWORD = secrets.token_hex(16)
#: A database's security object that admits admins only, as CouchDB 3 treats a new one.
ADMIN_ONLY_SECURITY: dict[str, Any] = {
    "admins": {"names": [], "roles": []},
    "members": {"names": [], "roles": ["_admin"]},
}

# Admin credentials by origin (scheme://host:port) of every server made here.
_credentials: dict[str, tuple[str, str]] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def basic_auth(user: str, password: str) -> str:
    """An `Authorization` header value for HTTP Basic authentication."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}".lower()


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its user:password part, and that part (decoded) if it had one."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    plain = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return plain, (unquote(parts.username), unquote(parts.password or ""))


def credentials_for(url: str) -> tuple[str, str] | None:
    """The admin's (user, password) of the test server at this URL, if it is one."""
    return _credentials.get(_origin(url))


def http_json(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
    *,
    anonymous: bool = False,
) -> tuple[int, Any]:
    """A blocking JSON request, for set-up and assertions outside the event loop.

    Authenticated as the admin of the server the URL points at (credentials in the URL,
    else those of a server made here), unless `anonymous` or the caller passes its own
    `Authorization` header. Returns (status, decoded body or None).
    """
    plain, credentials = split_credentials(url)
    credentials = credentials or _credentials.get(_origin(plain))
    request_headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if credentials and not anonymous:
        request_headers["Authorization"] = basic_auth(*credentials)
    request_headers |= headers or {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(plain, data=data, method=method, headers=request_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class CouchServer:
    """A CouchDB-compatible server the tests talk to as its admin."""

    name: str
    url: str
    user: str
    password: str

    def _register(self) -> None:
        _credentials[_origin(self.url)] = (self.user, self.password)

    @property
    def auth_header(self) -> dict[str, str]:
        """The admin's `Authorization` header, for clients other than http_json."""
        return {"Authorization": basic_auth(self.user, self.password)}

    @property
    def running(self) -> bool:
        return True

    def db_url(self, db: str) -> str:
        return f"{self.url}/{db}"

    def authenticated_db_url(self, db: str) -> str:
        """The database's URL with the admin's credentials in its userinfo.

        The form of a replication endpoint that CouchDB 3 documents (userinfo, read as
        is: keep the password free of characters a URL escapes) and pouchdb-server reads.
        """
        parts = urlsplit(self.db_url(db))
        userinfo = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return urlunsplit((parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query, ""))

    def create_db(self, db: str, security: dict[str, Any] | None = None) -> None:
        """Create the database (if absent) and make it admin-only, as CouchDB 3 does.

        `security` replaces the admin-only security object when given.
        """
        status, body = http_json("PUT", self.db_url(db))
        assert status in (201, 202, 412), body
        status, body = http_json(
            "PUT", self.db_url(db) + "/_security", security or ADMIN_ONLY_SECURITY
        )
        assert status == 200, body

    def delete_db(self, db: str) -> None:
        status, body = http_json("DELETE", self.db_url(db))
        assert status in (200, 202, 404), body

    def replicate_from(self, source: CouchServer, db: str, doc_id: str | None = None) -> str:
        """A continuous pull replication of `db` from source into this server."""
        doc_id = doc_id or f"{db}-from-{source.name}"
        status, body = http_json(
            "PUT",
            f"{self.url}/_replicator/{doc_id}",
            {
                "source": source.authenticated_db_url(db),
                "target": self.authenticated_db_url(db),
                "continuous": True,
            },
        )
        assert status in (201, 202), body
        return doc_id

    def all_ids(self, db: str) -> set[str]:
        status, body = http_json("GET", self.db_url(db) + "/_all_docs")
        assert status == 200, body
        return {row["id"] for row in body["rows"] if not row["id"].startswith("_design/")}

    def database_names(self) -> set[str]:
        status, body = http_json("GET", self.url + "/_all_dbs")
        assert status == 200, body
        return set(body)

    def replication_ids(self) -> set[str]:
        status, body = http_json("GET", self.url + "/_replicator/_all_docs")
        if status == 404:
            return set()
        assert status == 200, body
        return {row["id"] for row in body["rows"] if not row["id"].startswith("_design/")}

    def remove_replication(self, doc_id: str) -> None:
        status, body = http_json("GET", f"{self.url}/_replicator/{quote(doc_id, safe='')}")
        if status == 200:
            path = f"{self.url}/_replicator/{quote(doc_id, safe='')}"
            http_json("DELETE", f"{path}?rev={body['_rev']}")


class PouchServer(CouchServer):
    """One pouchdb-server process. `stop()` and `start()` again keep port, data and admin."""

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
        self.user = ADMIN_USER
        self.password = _STANDIN_PASSWORD
        self._process: subprocess.Popen[bytes] | None = None
        self._register()

    def start(self) -> PouchServer:
        self._register()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.json"
        # As the image runs it: no line per request (see docker-entrypoint.js), and an admin
        # (pouchdb-server hashes the clear-text password into this file), also in a config
        # a test wrote.
        settings = json.loads(config.read_text()) if config.exists() else {}
        settings.setdefault("log", {"level": "warning"})
        if self.user not in settings.setdefault("admins", {}):
            settings["admins"][self.user] = self.password
            config.write_text(json.dumps(settings))
        config.chmod(0o600)
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
                # An admin-only resource: up, and the admin configured.
                status, _ = http_json("GET", self.url + "/_all_dbs", timeout=1.0)
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
        # Its port may serve something else next: no admin credentials sent there.
        _credentials.pop(_origin(self.url), None)


class ExternalCouchDB(CouchServer):
    """A server the suite did not start (KUNO_TEST_COUCHDB_URLS): it cannot stop it.

    start() checks that it answers as its admin; stop() and destroy() leave it running.
    """

    def __init__(self, url: str, name: str) -> None:
        plain, credentials = split_credentials(url.rstrip("/"))
        if credentials is None:
            raise ValueError(
                f"{EXTERNAL_URLS_VARIABLE}: {plain} has no admin credentials "
                "(http://user:password@host:port)"
            )
        self.name = name
        self.url = plain
        self.port = urlsplit(plain).port or (443 if plain.startswith("https:") else 80)
        self.user, self.password = credentials
        self._register()

    def start(self) -> ExternalCouchDB:
        try:
            status, body = http_json("GET", self.url + "/_all_dbs")
        except OSError as exc:
            raise RuntimeError(f"{self.name} ({self.url}) does not answer: {exc}") from None
        if status != 200:
            raise RuntimeError(f"{self.name} ({self.url}) refused its admin: {status} {body}")
        return self

    def stop(self) -> None:
        """Skips the calling test: the suite never stops a server it did not start."""
        import pytest  # only here: bench uses this module outside pytest

        pytest.skip(f"stops a CouchDB server, which {EXTERNAL_URLS_VARIABLE} servers never are")

    def destroy(self) -> None:
        """Nothing: the suite never removes a server it did not start."""


def external_servers() -> list[ExternalCouchDB] | None:
    """The servers KUNO_TEST_COUCHDB_URLS names, or None: the stand-in is used."""
    value = os.environ.get(EXTERNAL_URLS_VARIABLE, "").strip()
    if not value:
        return None
    urls = [part.strip() for part in value.split(",") if part.strip()]
    return [ExternalCouchDB(url, f"couchdb-{i}") for i, url in enumerate(urls, start=1)]


#: The real-CouchDB mode's servers, or None: the stand-in's processes are used.
EXTERNAL = external_servers()
#: Put in fixed database names: servers that outlive a run get names of this run's own.
RUN_PREFIX = "" if EXTERNAL is None else f"{secrets.token_hex(3)}_"


def skip_if_external(what: str) -> None:
    """Skip the test in the real-CouchDB mode: `what` needs a server the suite runs."""
    if EXTERNAL is not None:
        import pytest

        pytest.skip(f"{what}: needs a server the suite starts and stops ({EXTERNAL_URLS_VARIABLE})")


@contextlib.contextmanager
def running(*servers: PouchServer, db: str) -> Iterator[tuple[PouchServer, ...]]:
    """The servers started, each with `db` created admin-only; destroyed (data too) after."""
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
