"""Malformed query values and CouchDB's special names on every route of the node (issue 17
items 1 and 3): a 4xx `{"error", "reason"}` naming the problem, never a 500, and nothing
reaches CouchDB as a path."""

from __future__ import annotations

import json

import pytest

from kuno.standard.validation import ascii_int, user_id
from tests.standard.conftest import bearer, raw_request
from tests.support.couchdb_names import ENCODED_SEGMENTS, SPECIAL_NAMES
from tests.support.messages import message_body
from tests.support.pouchdb import http_json

# str.isdigit() takes each of these; int() refuses the first three, and the 5,000 digits
# pass Python's 4,300-digit limit for int().
NOT_ASCII_INTEGERS = [
    "²",
    "①",
    "⒈",
    "9" * 5000,
    "٣",
    "\uff13",  # fullwidth 3
    "+5",
    "-1",
    " 5",
    "5 ",
    "",
    "0x10",
    "1e3",
]


@pytest.mark.parametrize("value", NOT_ASCII_INTEGERS)
async def test_a_limit_that_is_no_ascii_integer_is_refused_with_400(node, user_token, value):
    response = await node.get(
        "/messages/bob", params={"limit": value}, headers=bearer(user_token("bob"))
    )
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "invalid_limit"
    assert "limit" in body["reason"]


SOME_ID = "8cf5c89b-e3b2-48ab-ba5e-d8c6000a5255"
BAD_CURSORS = [
    *(f"{value}_{SOME_ID}" for value in NOT_ASCII_INTEGERS),
    "12",
    "12_",
    f"_{SOME_ID}",
    "12__all_docs",
    "12__design/x",
    "12_" + "a" * 300,
]


@pytest.mark.parametrize("after", BAD_CURSORS)
async def test_a_cursor_that_is_none_of_ours_is_refused_with_400(node, user_token, after):
    response = await node.get(
        "/messages/bob", params={"after": after}, headers=bearer(user_token("bob"))
    )
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_cursor"


@pytest.mark.parametrize("name", ["limit", "after"])
async def test_a_paging_parameter_given_twice_is_refused(node, user_token, name):
    value = "5" if name == "limit" else f"1_{SOME_ID}"
    response = await node.get(
        f"/messages/bob?{name}={value}&{name}={value}", headers=bearer(user_token("bob"))
    )
    assert response.status == 400
    assert (await response.json())["error"] == f"invalid_{name}"


def test_ascii_int_takes_only_ascii_digits_in_range():
    assert ascii_int("0042", 1, 100) == 42
    for text in [*NOT_ASCII_INTEGERS, "0", "101", "9" * 21]:
        with pytest.raises(ValueError, match=r"integer 1\.\.100"):
            ascii_int(text, 1, 100)


def test_no_user_id_may_begin_with_an_underscore():
    for name in SPECIAL_NAMES:
        with pytest.raises(ValueError, match="must not begin with _"):
            user_id(name)
    assert user_id("bob-1_x") == "bob-1_x"


def database_state(couchdb, database):
    """What a special name could change: every id, the security object, the design docs."""
    _, security = http_json("GET", f"{couchdb.db_url(database)}/_security")
    _, design = http_json(
        "GET",
        f"{couchdb.db_url(database)}/_all_docs?include_docs=true"
        '&startkey="_design/"&endkey="_design0"',
    )
    status, local = http_json("GET", f"{couchdb.db_url(database)}/_local/x")
    return couchdb.all_ids(database), security, design["rows"], status, local


def assert_json_4xx(answer):
    assert 400 <= answer.status < 500, (answer.status, answer.body[:200])
    assert answer.content_type.startswith("application/json"), answer.content_type
    assert set(answer.json()) == {"error", "reason"}


def test_no_route_lets_a_special_name_reach_couchdb(
    node_url, couchdb, database, master_token, user_token
):
    kept = message_body("bob")
    master = bearer(master_token) | {"Content-Type": "application/json"}
    stored = raw_request(node_url, "POST", "/messages", json.dumps(kept).encode(), master)
    assert stored.status == 201
    before = database_state(couchdb, database)
    tokens = [master, bearer(user_token("bob"))]
    segments = [*SPECIAL_NAMES, *ENCODED_SEGMENTS]

    for segment in segments:
        for headers in tokens:
            assert_json_4xx(raw_request(node_url, "GET", f"/messages/{segment}", None, headers))
            assert_json_4xx(raw_request(node_url, "DELETE", f"/messages/{segment}", None, headers))
        # The name as a token's subject too: the path is checked, not only compared.
        own = bearer(user_token(segment))
        assert_json_4xx(raw_request(node_url, "GET", f"/messages/{segment}", None, own))
    # A cursor's id is only compared in the node, never sent; still no special name.
    for name in [*SPECIAL_NAMES, "%5Fall_docs", "%5Fdesign%2Fx"]:
        cursor = f"/messages/bob?after=1_{name}"
        assert_json_4xx(raw_request(node_url, "GET", cursor, None, tokens[1]))

    for name in SPECIAL_NAMES:
        for field in ("id", "_id", "senderId", "recipientId"):
            body = message_body("bob") | {field: name}
            single = json.dumps(body).encode()
            batch = json.dumps({"messages": [message_body("bob"), body]}).encode()
            assert_json_4xx(raw_request(node_url, "POST", "/messages", single, master))
            assert_json_4xx(raw_request(node_url, "POST", "/messages/batch", batch, master))

    assert database_state(couchdb, database) == before
    assert before[0] == {kept["id"]}
