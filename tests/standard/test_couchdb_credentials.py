"""The test servers require credentials as production's CouchDB does; the node sends them."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from kuno.common.couch import CouchClient, Unauthorized
from tests.standard.conftest import bearer
from tests.support.messages import message_body
from tests.support.pouchdb import http_json


def test_a_test_server_refuses_anonymous_requests_to_a_database(couchdb, database):
    # No admin party: the suite cannot pass by reaching its servers without credentials.
    couchdb.create_db(database)
    doc_url = f"{couchdb.db_url(database)}/a-document"
    assert http_json("PUT", doc_url, {"type": "message"})[0] == 201

    for method, url, body in (
        ("GET", couchdb.db_url(database), None),
        ("GET", couchdb.db_url(database) + "/_all_docs", None),
        ("GET", doc_url, None),
        ("PUT", f"{couchdb.db_url(database)}/anonymous", {"type": "message"}),
    ):
        status, refusal = http_json(method, url, body, anonymous=True)
        assert status in (401, 403), (method, url, status, refusal)
    # The admin's resources (pouchdb-server answers 400 for _replicator, CouchDB 3 401).
    for method, url, body in (
        ("GET", couchdb.url + "/_replicator/_all_docs", None),
        ("PUT", couchdb.url + "/_config/admins/intruder", "password"),
    ):
        status, refusal = http_json(method, url, body, anonymous=True)
        assert status in (400, 401, 403), (method, url, status, refusal)
    assert couchdb.all_ids(database) == {"a-document"}


@pytest.mark.parametrize(
    ("path", "body"),
    [("_find", {"selector": {}}), ("_bulk_get", {"docs": [{"id": "a-document"}]})],
)
def test_an_anonymous_query_cannot_read_an_admin_only_database(couchdb, database, path, body):
    couchdb.create_db(database)
    assert http_json("PUT", f"{couchdb.db_url(database)}/a-document", {"secret": "hash"})[0] == 201

    status, answer = http_json("POST", f"{couchdb.db_url(database)}/{path}", body, anonymous=True)

    assert status in (401, 403), (status, answer)


def test_a_test_server_refuses_a_wrong_admin_password(couchdb, database):
    couchdb.create_db(database)
    wrong = {"Authorization": "Basic " + "YWRtaW46d3Jvbmc="}  # admin:wrong
    assert http_json("GET", couchdb.db_url(database), headers=wrong)[0] == 401


@pytest.mark.parametrize(
    ("credentials", "stored"),
    [
        pytest.param("right", True, id="the admin's credentials"),
        pytest.param("wrong", False, id="a wrong password"),
        pytest.param("none", False, id="no credentials"),
    ],
)
async def test_the_node_stores_only_with_the_right_credentials(
    start_node, couchdb, database, master_token, caplog, credentials, stored
):
    # Made first: an anonymous PUT of a new database kills pouchdb-server 4.2.
    couchdb.create_db(database)
    settings = {
        "right": {"couchdb_user": couchdb.user, "couchdb_password": couchdb.password},
        "wrong": {"couchdb_user": couchdb.user, "couchdb_password": "not-the-password"},
        "none": {"couchdb_user": None, "couchdb_password": None},
    }[credentials]
    caplog.set_level(logging.DEBUG)
    node = await start_node(couchdb, **settings)

    body = message_body()
    response = await node.post("/messages", json=body, headers=bearer(master_token))

    assert response.status == (201 if stored else 502), await response.text()
    assert (body["id"] in couchdb.all_ids(database)) is stored
    assert couchdb.password not in caplog.text
    assert "not-the-password" not in caplog.text


async def test_credentials_in_the_url_are_sent_and_never_shown(couchdb, database):
    couchdb.create_db(database)
    authority = couchdb.url.split("://", 1)[1]
    url = f"http://{couchdb.user}:{couchdb.password}@{authority}"
    async with aiohttp.ClientSession() as session:
        client = CouchClient(session, url)
        assert couchdb.password not in repr(client) + str(client.url)
        assert (await client.request("GET", f"/{database}"))["db_name"] == database
        wrong = CouchClient(session, couchdb.url, couchdb.user, "not-the-password")
        with pytest.raises(Unauthorized):
            await wrong.request("GET", f"/{database}")


def test_a_user_name_with_a_colon_is_refused():
    with pytest.raises(ValueError, match="RFC 7617"):
        CouchClient(None, "http://127.0.0.1:5984", "ad:min", "password")  # type: ignore[arg-type]
