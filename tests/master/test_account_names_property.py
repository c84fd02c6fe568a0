"""Property: register and login with any name a client could send (issue 17).

Never a 5xx, always a JSON `{"error", "reason"}` on refusal, nothing stored on refusal,
and what is stored is stored under the canonical name.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kuno.client.crypto import KeyPair
from kuno.common.names import canonical_username, is_valid_username
from tests.master.conftest import PASSWORD, MasterFactory
from tests.support.pouchdb import PouchServer

SPECIAL = ["_all_docs", "_security", "_design/x", "_local/x", "%5Fall_docs", "_changes"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)
NAMES = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    st.text(max_size=80),
    st.sampled_from(SPECIAL),
    st.sampled_from(SPECIAL).map(str.upper),
    JSON_VALUES,
)


async def _check_error(response: Any) -> dict[str, Any]:
    assert response.status < 500, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    if response.status >= 400:
        assert set(body) == {"error", "reason"}
    return body


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=NAMES)
async def test_any_name_gets_a_json_answer_and_nothing_is_stored_on_refusal(
    start_master: MasterFactory, couchdb: PouchServer, database: str, name: Any
) -> None:
    master: TestClient = await start_master(client_burst=10_000, login_burst=10_000)
    users = f"users_{database}"
    before = couchdb.all_ids(users)
    key = KeyPair.generate().public_b64
    response = await master.post(
        "/api/register", json={"username": name, "password": PASSWORD, "publicKey": key}
    )
    await _check_error(response)
    after = couchdb.all_ids(users)
    if response.status == 201:
        assert is_valid_username(name)
        assert after - before == {canonical_username(name)}
    else:
        assert response.status in (400, 409)
        assert after == before
        if not is_valid_username(name):
            assert response.status == 400
    response = await master.post("/api/login", json={"username": name, "password": PASSWORD})
    body = await _check_error(response)
    assert response.status in (200, 400, 401)
    if response.status == 200:
        assert body["username"] == canonical_username(name)
    assert couchdb.all_ids(users) == after
