"""POST /api/register, POST /api/login, GET /api/users/{name}/key."""

from __future__ import annotations

from urllib.parse import quote

import jwt
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from kuno.client.crypto import KeyPair
from kuno.common.names import USERNAME_RULE
from kuno.common.tokens import TokenVerifier, load_public_key
from tests.master.conftest import PASSWORD, MasterFactory, bearer, register
from tests.support.couchdb_names import ENCODED_SEGMENTS, SPECIAL_NAMES
from tests.support.pouchdb import PouchServer, http_json


async def register_as(
    master: TestClient, username: str, password: str = PASSWORD, key: str | None = None
) -> ClientResponse:
    """POST /api/register for `username` with `key` (default: a new public key, base64);
    the response, its status not checked."""
    key = key or KeyPair.generate().public_b64
    body = {"username": username, "password": password, "publicKey": key}
    return await master.post("/api/register", json=body)


async def test_register_stores_an_argon2id_hash_never_the_password(
    master: TestClient, couchdb: PouchServer, database: str
) -> None:
    key = KeyPair.generate().public_b64
    response = await register_as(master, "alice", key=key)
    assert response.status == 201
    assert await response.json() == {"username": "alice", "publicKey": key}
    status, doc = http_json("GET", f"{couchdb.db_url('users_' + database)}/alice")
    assert status == 200
    assert doc["passwordHash"].startswith("$argon2id$")
    assert PASSWORD not in str(doc)
    assert doc["publicKey"] == key


@pytest.mark.parametrize("name", ["null", "NULL", "undefined", "constructor"])
async def test_names_a_json_layer_might_read_as_values_are_ordinary_accounts(
    master: TestClient, name: str
) -> None:
    # pouchdb-server refuses `PUT /db/null` (412), which once made registering "null" a 503.
    token = await register(master, name)
    response = await master.get(f"/api/users/{name}/key", headers=bearer(token))
    assert response.status == 200
    assert (await response.json())["username"] == name.lower()


async def test_a_taken_username_is_409(master: TestClient) -> None:
    await register(master, "alice")
    response = await register_as(master, "alice", "another password")
    assert response.status == 409
    assert (await response.json())["error"] == "username_taken"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"username": "no spaces", "password": PASSWORD}, "invalid_username"),
        ({"username": "x" * 65, "password": PASSWORD}, "invalid_username"),
        ({"username": "alice", "password": "short"}, "invalid_password"),
        (
            {"username": "alice", "password": PASSWORD, "publicKey": "bm90IDMyIGJ5dGVz"},
            "invalid_public_key",
        ),
        ({"username": "alice", "password": PASSWORD, "publicKey": "%%%"}, "invalid_public_key"),
    ],
)
async def test_register_refuses_bad_input_with_400(
    master: TestClient, body: dict[str, str], error: str
) -> None:
    body.setdefault("publicKey", KeyPair.generate().public_b64)
    response = await master.post("/api/register", json=body)
    assert response.status == 400
    assert (await response.json())["error"] == error


async def test_login_returns_a_short_lived_eddsa_token_for_the_user(
    master: TestClient, key_pair: tuple[bytes, bytes]
) -> None:
    token = await register(master, "alice")
    identity = TokenVerifier(load_public_key(key_pair[1]), "kuno").verify(token)
    assert identity.subject == "alice"
    assert not identity.is_master
    claims = jwt.decode(token, options={"verify_signature": False})
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert claims["exp"] - claims["iat"] == 900


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong password"), ("nobody", PASSWORD)]
)
async def test_a_wrong_password_or_unknown_user_is_401(
    master: TestClient, username: str, password: str
) -> None:
    await register(master, "alice")
    response = await master.post("/api/login", json={"username": username, "password": password})
    assert response.status == 401
    body = await response.json()
    assert body == {"error": "invalid_credentials", "reason": "wrong username or password"}


async def test_login_attempts_are_rate_limited_per_username(start_master: MasterFactory) -> None:
    master = await start_master(login_burst=3, login_per_minute=1)
    await register(master, "alice")  # one attempt
    statuses = []
    for _ in range(3):
        response = await master.post(
            "/api/login", json={"username": "alice", "password": "wrong password"}
        )
        statuses.append(response.status)
    assert statuses == [401, 401, 429]
    assert int(response.headers["Retry-After"]) >= 1
    # Even the right password waits: the limit is on attempts.
    response = await master.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert response.status == 429
    # Another user is not affected.
    await register(master, "bob")


async def test_requests_are_rate_limited_per_client_address(start_master: MasterFactory) -> None:
    master = await start_master(client_burst=2, client_per_minute=1)
    statuses = []
    for name in ("a1", "a2", "a3"):
        response = await master.post("/api/login", json={"username": name, "password": PASSWORD})
        statuses.append(response.status)
    assert statuses == [401, 401, 429]


async def test_behind_the_proxy_the_limit_is_per_forwarded_address(
    start_master: MasterFactory,
) -> None:
    master = await start_master(
        client_burst=1, client_per_minute=1, client_address_header="X-Real-IP"
    )

    async def attempt(address: str) -> int:
        response = await master.post(
            "/api/login",
            json={"username": "alice", "password": PASSWORD},
            headers={"X-Real-IP": address},
        )
        return response.status

    assert [await attempt("192.0.2.1"), await attempt("192.0.2.2")] == [401, 401]
    assert await attempt("192.0.2.1") == 429


async def test_key_lookup_needs_a_token_and_knows_only_registered_users(
    master: TestClient,
) -> None:
    key = KeyPair.generate().public_b64
    token = await register(master, "alice", key)
    response = await master.get("/api/users/alice/key")
    assert response.status == 401
    response = await master.get("/api/users/alice/key", headers=bearer(token))
    assert response.status == 200
    assert await response.json() == {"username": "alice", "publicKey": key}
    response = await master.get("/api/users/nobody/key", headers=bearer(token))
    assert response.status == 404


# --- names that would address CouchDB's special documents (issue 17 item 1) ----------


def _users_state(couchdb: PouchServer, db: str) -> tuple[object, set[str]]:
    security = http_json("GET", f"{couchdb.db_url(db)}/_security")
    status, listing = http_json("GET", f"{couchdb.db_url(db)}/_all_docs")
    assert status == 200, listing
    return security, {row["id"] for row in listing["rows"]}


@pytest.mark.parametrize("name", [*SPECIAL_NAMES, *ENCODED_SEGMENTS])
async def test_no_route_lets_a_name_address_a_couchdb_special_document(
    master: TestClient, couchdb: PouchServer, database: str, name: str
) -> None:
    token = await register(master, "alice")
    before = _users_state(couchdb, f"users_{database}")
    body = {"username": name, "password": PASSWORD, "publicKey": KeyPair.generate().public_b64}
    for path in ("/api/register", "/api/login"):
        response = await master.post(path, json=body)
        assert response.status == 400, (path, await response.text())
        assert (await response.json())["error"] == "invalid_username"
    for raw in (name, quote(name, safe=""), quote(name, safe="/")):
        response = await master.get(f"/api/users/{raw}/key", headers=bearer(token))
        assert response.status in (400, 404), (raw, await response.text())
        assert response.content_type == "application/json"
        assert (await response.json())["error"] in ("invalid_username", "not_found")
    assert _users_state(couchdb, f"users_{database}") == before


async def test_a_name_beginning_with_underscore_is_refused_before_couchdb(
    master: TestClient,
) -> None:
    """`_design` was stored as the document `_design` and logged in (issue 17)."""
    response = await register_as(master, "_design")
    assert response.status == 400
    assert (await response.json())["reason"] == USERNAME_RULE


# --- one person, one name (issue 17 item 2) ------------------------------------------


@pytest.mark.parametrize("name", ["master", "Master", "MASTER", "mAsTeR"])
async def test_a_reserved_name_is_taken_in_every_case(master: TestClient, name: str) -> None:
    response = await register_as(master, name)
    assert response.status == 409
    assert (await response.json())["error"] == "username_taken"


async def test_names_are_unique_whatever_their_case(
    master: TestClient, couchdb: PouchServer, database: str, key_pair: tuple[bytes, bytes]
) -> None:
    key = KeyPair.generate().public_b64
    response = await register_as(master, "Alice", key=key)
    assert response.status == 201
    assert await response.json() == {"username": "alice", "publicKey": key}
    for other in ("alice", "ALICE", "aLiCe"):
        response = await register_as(master, other, "another password")
        assert response.status == 409, other
    # Stored once, under the canonical id, with the name as its owner typed it.
    assert couchdb.all_ids(f"users_{database}") == {"alice"}
    status, doc = http_json("GET", f"{couchdb.db_url('users_' + database)}/alice")
    assert (status, doc["username"], doc["displayName"]) == (200, "alice", "Alice")
    # Any case logs in; the token's subject is the user id, the canonical name.
    verifier = TokenVerifier(load_public_key(key_pair[1]), "kuno")
    for typed in ("Alice", "alice", "ALICE"):
        response = await master.post("/api/login", json={"username": typed, "password": PASSWORD})
        assert response.status == 200, typed
        body = await response.json()
        assert body["username"] == "alice"
        assert verifier.verify(body["token"]).subject == "alice"
        response = await master.get(f"/api/users/{typed}/key", headers=bearer(body["token"]))
        assert await response.json() == {"username": "alice", "publicKey": key}


async def test_an_account_made_before_canonical_names_still_logs_in(
    master: TestClient, couchdb: PouchServer, database: str, key_pair: tuple[bytes, bytes]
) -> None:
    """A legacy document (id = the name as typed) logs in, and is copied to its canonical
    id on that login, so messages addressed to `carol` reach it."""
    key = KeyPair.generate().public_b64
    legacy = {
        "type": "user",
        "username": "Carol",
        "publicKey": key,
        "passwordHash": PasswordHasher().hash(PASSWORD),
        "createdAt": 1_700_000_000_000,
    }
    db_url = couchdb.db_url(f"users_{database}")
    assert http_json("PUT", f"{db_url}/Carol", legacy)[0] == 201
    response = await master.post("/api/login", json={"username": "Carol", "password": PASSWORD})
    assert response.status == 200, await response.text()
    token = (await response.json())["token"]
    assert TokenVerifier(load_public_key(key_pair[1]), "kuno").verify(token).subject == "carol"
    status, migrated = http_json("GET", f"{db_url}/carol")
    assert status == 200
    assert (migrated["username"], migrated["displayName"], migrated["publicKey"]) == (
        "carol",
        "Carol",
        key,
    )
    assert migrated["passwordHash"] == legacy["passwordHash"]
    for typed in ("carol", "CAROL"):
        response = await master.post("/api/login", json={"username": typed, "password": PASSWORD})
        assert response.status == 200, typed
    response = await master.get("/api/users/carol/key", headers=bearer(token))
    assert await response.json() == {"username": "carol", "publicKey": key}
    # Nobody can take the name in another case.
    response = await register_as(master, "CAROL")
    assert response.status == 409
