"""Property-based tests of every route of the standard node (issue 17): whatever a client
sends, never a 5xx, every refusal a JSON `{"error", "reason"}`, and nothing stored by a
refused request. A real node over HTTP on a real pouchdb-server (conftest.node_url).

Not generated here: bodies nested deeper than a few levels and charsets other than UTF-8.
Both reach the shared JSON body reader (kuno.common.web.read_json_object), which another
change covers; test_body_reader_regressions below names those inputs.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.standard.conftest import bearer, raw_request
from tests.standard.test_bad_input import NOT_ASCII_INTEGERS
from tests.support.messages import message_body

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# aiohttp's limit on the request line is 8,190 bytes; the proxy's is lower still.
MAX_REQUEST_LINE = 8000

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
# Special names and their encodings among the text a client might send.
names = st.sampled_from(["_all_docs", "_design/x", "_local/x", "_security", "bob", ""]) | st.text(
    max_size=30
)


@st.composite
def message_like(draw) -> object:
    """A message body with some fields replaced, removed or added; or any JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    body = message_body(draw(st.sampled_from(["bob", "carol"])))
    for field in draw(st.sets(st.sampled_from([*body, "_id", "type", "extra"]), max_size=3)):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            body.pop(field, None)
        elif choice == 1:
            body[field] = draw(json_values)
        else:
            body[field] = draw(names)
    return body


content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x"]
)


@st.composite
def post_bodies(draw, batch: bool) -> tuple[bytes, str]:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=200)), draw(content_types)
    if batch:
        value = (
            {"messages": draw(st.lists(message_like(), max_size=4))}
            if kind > 1
            else draw(json_values)
        )
    else:
        value = draw(message_like())
    return json.dumps(value).encode(), draw(content_types)


@st.composite
def path_segments(draw) -> str:
    """Text as a path segment, percent-encoded in one of several ways (some malformed)."""
    text = draw(names)
    safe = draw(st.sampled_from(["", "/", "_/", "%", "_%/"]))
    return quote(text, safe=safe) or "x"


def tokens(master_token, user_token):
    return st.sampled_from(
        [
            bearer(master_token),
            bearer(user_token("bob")),
            bearer("not-a-token"),
            {},
        ]
    )


def check_refusal(answer, before, after):
    assert answer.status < 500, (answer.status, answer.body[:300])
    if answer.status >= 400:
        assert answer.content_type.startswith("application/json"), answer.content_type
        assert set(answer.json()) == {"error", "reason"}, answer.body[:300]
        assert after == before, "a refused request changed the database"


def stored_ids(couchdb, database):
    return couchdb.all_ids(database)


@pytest.fixture
def kept(node_url, master_token):
    """A message for bob, stored through the node before the test: its body (a dict)."""
    body = message_body("bob")
    headers = bearer(master_token) | {"Content-Type": "application/json"}
    answer = raw_request(node_url, "POST", "/messages", json.dumps(body).encode(), headers)
    assert answer.status == 201, answer.body[:300]
    return body


@pytest.mark.parametrize("route", ["/messages", "/messages/batch"])
def test_any_post_is_stored_or_refused_with_a_json_4xx(
    node_url, couchdb, database, master_token, user_token, route
):
    @PROPERTY_SETTINGS
    @given(
        body=post_bodies(batch=route.endswith("batch")), headers=tokens(master_token, user_token)
    )
    def post(body, headers):
        data, content_type = body
        before = stored_ids(couchdb, database)
        headers = headers | ({"Content-Type": content_type} if content_type else {})
        answer = raw_request(node_url, "POST", route, data, headers)
        check_refusal(answer, before, stored_ids(couchdb, database))

    post()


@pytest.mark.usefixtures("kept")
def test_any_listing_is_answered_or_refused_with_a_json_4xx(
    node_url, couchdb, database, master_token, user_token
):
    integers = (
        st.integers(-5, 2000).map(str) | st.sampled_from(NOT_ASCII_INTEGERS) | st.text(max_size=6)
    )
    cursors = st.builds(lambda t, i: f"{t}_{i}", integers, names) | st.text(max_size=12)
    others = st.lists(
        st.tuples(st.sampled_from(["since", "bookmark", "skip"]) | st.text(max_size=8), integers),
        max_size=2,
    )

    @PROPERTY_SETTINGS
    @given(
        user=path_segments() | st.just("bob"),
        limit=st.lists(integers, max_size=2),
        after=st.lists(cursors, max_size=2),
        extra=others,
        headers=tokens(master_token, user_token),
    )
    def listing(user, limit, after, extra, headers):
        query = [("limit", v) for v in limit] + [("after", v) for v in after] + extra
        before = stored_ids(couchdb, database)
        path = f"/messages/{user}" + (f"?{urlencode(query)}" if query else "")
        # aiohttp's HTTP parser answers a longer request line itself, in text (see README).
        assume(len(path) < MAX_REQUEST_LINE)
        answer = raw_request(node_url, "GET", path, None, headers)
        check_refusal(answer, before, stored_ids(couchdb, database))
        assert stored_ids(couchdb, database) == before
        if answer.status == 200:
            assert set(answer.json()) == {"messages", "next"}

    listing()


def test_any_delete_of_another_id_is_refused_with_a_json_4xx(
    node_url, couchdb, database, master_token, user_token, kept
):

    @PROPERTY_SETTINGS
    @given(
        message_id=path_segments() | st.uuids().map(str),
        headers=tokens(master_token, user_token),
    )
    def delete(message_id, headers):
        before = stored_ids(couchdb, database)
        answer = raw_request(node_url, "DELETE", f"/messages/{message_id}", None, headers)
        assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
        check_refusal(answer, before, stored_ids(couchdb, database))

    delete()
    assert stored_ids(couchdb, database) == {kept["id"]}


BODY_READER_INPUTS = {
    "charset=x": (b"{}", "application/json; charset=x"),
    "nested 1,000 deep": (b"[" * 1000 + b"]" * 1000, "application/json"),
    "an object nested 1,000 deep": (b'{"a":' * 1000 + b"1" + b"}" * 1000, "application/json"),
}


@pytest.mark.parametrize("route", ["/messages", "/messages/batch"])
@pytest.mark.parametrize("body", BODY_READER_INPUTS.values(), ids=BODY_READER_INPUTS.keys())
def test_body_reader_regressions(node_url, couchdb, database, master_token, route, body):
    data, content_type = body
    before = stored_ids(couchdb, database)
    headers = bearer(master_token) | {"Content-Type": content_type}
    answer = raw_request(node_url, "POST", route, data, headers)
    check_refusal(answer, before, stored_ids(couchdb, database))
    assert 400 <= answer.status < 500
