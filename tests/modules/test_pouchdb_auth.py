"""The stand-in refuses what CouchDB 3 refuses once the server has an admin.

docker-entrypoint.js (the image's entrypoint and PouchServer's preload) guards every route
of pouchdb-server that CouchDB 3 restricts: a client that is not a server admin gets
CouchDB's 401 JSON (403 for a signed-in user who is not a member of the database), on the
routes pouchdb-server 4.2 checked no _security on too (_find, _bulk_get), and no request
ends the process.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pouchdb import POUCHDB_PRELOAD, PouchServer, free_port, http_json

ADMIN, ADMIN_PASSWORD = "kuno-admin", "admin pw/7c1e"
USER, USER_PASSWORD = "reader", "reader pw:9"
DB = "secret_db"
SHARED_DB = "shared_db"


def basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AS_ADMIN = basic(ADMIN, ADMIN_PASSWORD)
AS_USER = basic(USER, USER_PASSWORD)


@pytest.fixture(scope="module")
def server(work_root: Path) -> Iterator[PouchServer]:
    """A server with an admin, an admin-only database with a document, a user of _users and
    a database whose members name that user."""
    workdir = work_root / "pouchdb-auth"
    workdir.mkdir()
    config = {"log": {"level": "warning"}, "admins": {ADMIN: ADMIN_PASSWORD}}
    (workdir / "config.json").write_text(json.dumps(config))
    server = PouchServer(workdir, "pouchdb-auth").start()
    try:
        admin_only = {"admins": {"roles": ["_admin"]}, "members": {"roles": ["_admin"]}}
        for db, security in ((DB, admin_only), (SHARED_DB, {"members": {"names": [USER]}})):
            assert http_json("PUT", server.db_url(db), headers=AS_ADMIN)[0] == 201
            status, body = http_json(
                "PUT", server.db_url(db) + "/_security", security, headers=AS_ADMIN
            )
            assert status == 200, body
            status, body = http_json(
                "PUT", server.db_url(db) + "/doc", {"secret": 42}, headers=AS_ADMIN
            )
            assert status == 201, body
        user = {"name": USER, "password": USER_PASSWORD, "roles": [], "type": "user"}
        status, body = http_json(
            "PUT", f"{server.url}/_users/org.couchdb.user:{USER}", user, headers=AS_ADMIN
        )
        assert status == 201, body
        yield server
    finally:
        server.destroy()


# (method, path under the server, body, the admin's expected status). {new} is a database
# name of the request's own: the admin's request creates or deletes it.
ROUTES = [
    ("POST", f"/{DB}/_find", {"selector": {}}, 200),
    ("POST", f"/{DB}/_bulk_get", {"docs": [{"id": "doc"}]}, 200),
    ("GET", f"/{DB}/_all_docs", None, 200),
    ("GET", f"/{DB}/_changes", None, 200),
    ("GET", f"/{DB}", None, 200),
    ("GET", f"/{DB}/doc", None, 200),
    ("PUT", f"/{DB}/{{new}}", {"k": 1}, 201),
    ("POST", f"/{DB}/_index", {"index": {"fields": ["secret"]}}, 200),
    ("PUT", "/{new}", None, 201),
    ("DELETE", "/{new}", None, 200),
    ("GET", "/_all_dbs", None, 200),
    ("GET", "/_users/_all_docs", None, 200),
    ("GET", "/_replicator/_all_docs", None, 200),
    ("GET", "/_config", None, 200),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "admin_status"), ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES]
)
def test_an_anonymous_client_is_refused_and_an_admin_served(
    server: PouchServer, name: str, method: str, path: str, body: Any, admin_status: int
) -> None:
    if method == "DELETE":
        assert http_json("PUT", server.db_url(name), headers=AS_ADMIN)[0] == 201
    url = server.url + path.format(new=name)

    status, answer = http_json(method, url, body, anonymous=True)

    assert (status, answer["error"]) == (401, "unauthorized"), answer
    assert answer["reason"]
    assert server.running
    assert http_json("GET", server.url + "/")[0] == 200
    assert http_json(method, url, body, headers=AS_ADMIN)[0] == admin_status


def test_a_session_cookie_of_the_admin_is_served(server: PouchServer) -> None:
    request = urllib.request.Request(
        server.url + "/_session",
        data=json.dumps({"name": ADMIN, "password": ADMIN_PASSWORD}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        cookie = response.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("AuthSession=")
    find = ("POST", server.db_url(DB) + "/_find", {"selector": {}})

    assert http_json(*find, anonymous=True)[0] == 401
    status, found = http_json(*find, headers={"Cookie": cookie}, anonymous=True)
    assert status == 200
    assert {"_id": "doc", "secret": 42} in [
        {key: doc[key] for key in ("_id", "secret") if key in doc} for doc in found["docs"]
    ]


def test_a_user_who_is_not_an_admin_reads_only_the_databases_naming_them(
    server: PouchServer,
) -> None:
    bulk_get = {"docs": [{"id": "doc"}]}
    for path, body in (("/_find", {"selector": {}}), ("/_bulk_get", bulk_get), ("/doc", None)):
        method = "GET" if body is None else "POST"
        status, answer = http_json(method, server.db_url(DB) + path, body, headers=AS_USER)
        assert (status, answer["error"]) == (403, "forbidden"), (path, answer)
        assert http_json(method, server.db_url(SHARED_DB) + path, body, headers=AS_USER)[0] == 200

    for method, path in (("GET", "/_all_dbs"), ("PUT", "/another_db"), ("DELETE", f"/{DB}")):
        status, answer = http_json(method, server.url + path, headers=AS_USER)
        assert (status, answer["error"]) == (401, "unauthorized"), (path, answer)
    # Creating an index writes a design document: a database admin's right.
    index = {"index": {"fields": ["secret"]}}
    status, _ = http_json("POST", server.db_url(SHARED_DB) + "/_index", index, headers=AS_USER)
    assert status in (401, 403)


def test_the_routes_couchdb_leaves_open_stay_open(server: PouchServer) -> None:
    assert http_json("GET", server.url + "/")[0] == 200
    status, session = http_json("GET", server.url + "/_session", anonymous=True)
    assert status == 200
    assert session["userCtx"]["name"] is None
    assert (
        http_json(
            "POST", server.url + "/_session", {"name": ADMIN, "password": "wrong"}, anonymous=True
        )[0]
        == 401
    )
    # ... and a wrong password is refused on a guarded route as well.
    status, answer = http_json("GET", server.url + "/_all_dbs", headers=basic(ADMIN, "wrong"))
    assert status == 401, answer


def test_an_error_a_route_passes_on_is_answered_in_json(server: PouchServer) -> None:
    # Express cannot decode the parameter and passes the error on: its own answer is HTML.
    status, answer = http_json("GET", server.db_url(DB) + "/%E0%A4%A", headers=AS_ADMIN)

    assert (status, answer["error"]) == (400, "bad_request"), answer


def test_a_rejection_no_route_handles_answers_500_and_the_process_lives(tmp_path: Path) -> None:
    """An http server whose handler leaves a rejection unhandled, with the entrypoint preloaded
    as PouchServer preloads it."""
    port = free_port()
    script = tmp_path / "server.js"
    script.write_text(
        "require('http').createServer((req, res) => {\n"
        "  if (req.url === '/fail') { Promise.resolve().then(() => { null.info(); }); return; }\n"
        "  res.end('{\"ok\":true}');\n"
        f"}}).listen({port}, '127.0.0.1', () => console.log('listening'));\n"
    )
    with subprocess.Popen(
        [shutil.which("node") or "node", "--require", str(POUCHDB_PRELOAD), str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == b"listening\n"
            status, answer = http_json("GET", f"http://127.0.0.1:{port}/fail")
            assert status == 500
            assert answer["error"] == "unknown_error"
            assert process.poll() is None
            assert http_json("GET", f"http://127.0.0.1:{port}/")[0] == 200
        finally:
            process.terminate()


def test_a_database_whose_security_names_no_member_is_public_as_in_couchdb(
    server: PouchServer,
) -> None:
    # CouchDB documents an empty members section as "any user can read and write
    # documents"; only its design documents and indexes stay with admins.
    public = "public_db"
    assert http_json("PUT", server.db_url(public), headers=AS_ADMIN)[0] == 201
    empty = {"admins": {"names": [], "roles": []}, "members": {"names": [], "roles": []}}
    assert http_json("PUT", server.db_url(public) + "/_security", empty, headers=AS_ADMIN)[0] == 200

    assert http_json("PUT", server.db_url(public) + "/note", {"n": 1}, anonymous=True)[0] == 201
    status, found = http_json(
        "POST", server.db_url(public) + "/_find", {"selector": {}}, anonymous=True
    )
    assert status == 200
    assert [doc["_id"] for doc in found["docs"]] == ["note"]
    index = {"index": {"fields": ["n"]}}
    assert http_json("POST", server.db_url(public) + "/_index", index, anonymous=True)[0] == 401
    assert server.running
