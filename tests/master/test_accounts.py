"""POST /api/register, POST /api/login, GET /api/users/{name}/key."""

from __future__ import annotations

import jwt
import pytest
from aiohttp.test_utils import TestClient

from kuno.client.crypto import KeyPair
from kuno.common.tokens import TokenVerifier, load_public_key
from tests.master.conftest import PASSWORD, MasterFactory, bearer, register
from tests.support.pouchdb import PouchServer, http_json


async def test_register_stores_an_argon2id_hash_never_the_password(
    master: TestClient, couchdb: PouchServer, database: str
) -> None:
    key = KeyPair.generate().public_b64
    response = await master.post(
        "/api/register", json={"username": "alice", "password": PASSWORD, "publicKey": key}
    )
    assert response.status == 201
    assert await response.json() == {"username": "alice", "publicKey": key}
    status, doc = http_json("GET", f"{couchdb.db_url('users_' + database)}/alice")
    assert status == 200
    assert doc["passwordHash"].startswith("$argon2id$")
    assert PASSWORD not in str(doc)
    assert doc["publicKey"] == key


async def test_a_taken_username_is_409(master: TestClient) -> None:
    await register(master, "alice")
    response = await master.post(
        "/api/register",
        json={
            "username": "alice",
            "password": "another password",
            "publicKey": KeyPair.generate().public_b64,
        },
    )
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
