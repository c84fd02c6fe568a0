"""Normalising and comparing, without Ansible; HTTP errors against real servers and ports."""

from __future__ import annotations

from typing import Any

import pytest

from tests.modules.helpers import load_library, load_module_utils
from tests.support.pouchdb import PouchServer, free_port

couchdb = load_module_utils()
database = load_library("couchdb_database")
index = load_library("couchdb_index")
replication = load_library("couchdb_replication")

SOURCE = "http://couchdb-2:5984/messages"
TARGET = "http://couchdb-1:5984/messages"
CREDENTIALS = ("replicator", "s3cret/pa:ss", "replicator", "s3cret/pa:ss")


# --- databases and indexes ------------------------------------------------------------


def test_security_compares_regardless_of_order_and_omissions():
    given = {"members": {"roles": ["kuno", "audit"]}, "admins": None}
    stored = {
        "admins": {"names": [], "roles": []},
        "members": {"names": [], "roles": ["audit", "kuno"]},
    }

    assert database.normalise_security(given) == database.normalise_security(stored)
    assert database.normalise_security({}) == database.normalise_security(None)
    assert database.normalise_security({"members": {"roles": ["kuno"]}}) != (
        database.normalise_security(stored)
    )


def test_index_fields_as_the_server_lists_them_equal_the_option():
    assert index.normalise_fields([{"recipientId": "asc"}, {"timestamp": "asc"}]) == [
        "recipientId",
        "timestamp",
    ]
    # A descending field is not the ascending one the option asks for.
    assert index.normalise_fields([{"timestamp": "desc"}]) != ["timestamp"]
    assert index.design_id("kuno") == index.design_id("_design/kuno") == "_design/kuno"


def test_find_index_matches_design_document_and_name():
    listing = [
        {"ddoc": None, "name": "_all_docs", "type": "special", "def": {}},
        {"ddoc": "_design/other", "name": "by-recipient", "type": "json", "def": {}},
        {"ddoc": "_design/kuno", "name": "by-recipient", "type": "json", "def": {"fields": []}},
    ]

    assert index.find_index(listing, "_design/kuno", "by-recipient") is listing[2]
    assert index.find_index(listing, "_design/kuno", "by-sender") is None


# --- replication documents ----------------------------------------------------------------


def written(location: str | None, credentials=CREDENTIALS, **fields: Any) -> dict[str, Any]:
    """A replication document as the module writes it."""
    digest = replication.credentials_digest(credentials)
    doc = {
        "_id": "messages-from-couchdb-2",
        "_rev": "1-abc",
        "source": replication.endpoint_body(SOURCE, *credentials[:2], location),
        "target": replication.endpoint_body(TARGET, *credentials[2:], location),
        "continuous": True,
        "create_target": False,
        replication.DIGEST_FIELD: digest,
    }
    doc.update(fields)
    return doc


def wanted(doc: dict[str, Any], location: str, credentials=CREDENTIALS) -> dict[str, Any]:
    """The comparable form of the task's options, with the salt of doc's digest."""
    stored = doc.get(replication.DIGEST_FIELD)
    if replication.same_digest(stored, credentials):
        digest = stored
    else:
        digest = replication.credentials_digest(credentials)
    return {
        "id": "messages-from-couchdb-2",
        "source": {"url": SOURCE, "credentials": location},
        "target": {"url": TARGET, "credentials": location},
        "continuous": True,
        "create_target": False,
        "selector": None,
        "credentials": digest,
    }


def changed(doc: dict[str, Any], location: str, credentials=CREDENTIALS) -> bool:
    return replication.replication_needs_update(
        replication.normalise_doc(doc), wanted(doc, location, credentials)
    )


def test_a_document_read_back_as_written_is_unchanged():
    assert not changed(written("auth"), "auth")
    assert not changed(written("url"), "url")


def test_server_managed_fields_are_ignored():
    doc = written(
        "url",
        _replication_state="triggered",
        _replication_id="f0e1",
        _replication_state_time="2026-11-26T22:18:31.615Z",
        _replication_stats={"docs_written": 3},
        owner="admin",
    )

    assert not changed(doc, "url")


def test_masked_and_stripped_credentials_are_unchanged():
    doc = written("auth")
    masked_auth = dict(
        doc,
        source={"url": SOURCE, "auth": {"basic": {"username": "replicator", "password": "*****"}}},
    )
    stripped = dict(doc, source=SOURCE, target={"url": TARGET})
    masked_url = written("url")
    masked_url["source"] = "http://replicator:*****@couchdb-2:5984/messages"

    assert not changed(masked_auth, "auth")
    assert not changed(stripped, "auth")
    assert not changed(masked_url, "url")


def test_a_new_password_is_a_change_even_when_masked():
    doc = written("auth")
    doc["source"] = {
        "url": SOURCE,
        "auth": {"basic": {"username": "replicator", "password": "*****"}},
    }
    new_password = ("replicator", "rotated", "replicator", "rotated")

    assert changed(doc, "auth", new_password)
    assert "credentials" in couchdb.differences(
        replication.normalise_doc(doc), wanted(doc, "auth", new_password)
    )


def test_credentials_in_the_wrong_place_or_missing_digest_are_changes():
    # The server moved to CouchDB 3.2: credentials belong in the auth object now.
    assert changed(written("url"), "auth")
    # Written by someone else: no digest to prove the credentials.
    foreign = written("auth")
    del foreign[replication.DIGEST_FIELD]
    assert changed(foreign, "auth")


def test_fields_the_module_does_not_manage_are_changes():
    assert changed(written("auth", filter="kuno/messages"), "auth")
    assert changed(written("auth", continuous=False), "auth")


def test_the_digest_depends_on_every_credential_and_the_salt():
    digest = replication.credentials_digest(CREDENTIALS)

    assert replication.same_digest(digest, CREDENTIALS)
    assert not replication.same_digest(digest, ("replicator", "other", *CREDENTIALS[2:]))
    assert not replication.same_digest(digest, ("other", *CREDENTIALS[1:]))
    assert not replication.same_digest("*****", CREDENTIALS)
    assert replication.credentials_digest(CREDENTIALS) != digest  # a new salt each time
    assert replication.credentials_digest((None, None, None, None)) is None
    assert "s3cret" not in digest


def test_credential_locations():
    assert replication.credential_location("http://u:p@h/db") == "url"
    assert replication.credential_location("http://h/db") is None
    assert replication.credential_location({"url": "http://h/db", "auth": {"basic": {}}}) == "auth"
    assert (
        replication.credential_location(
            {"url": "http://h/db", "headers": {"Authorization": "Basic eDp5"}}
        )
        == "headers"
    )


# --- URLs, flavours, errors -------------------------------------------------------------


def test_credentials_in_a_url_round_trip_escaped():
    url = couchdb.with_userinfo(SOURCE, "repl icator", "p@ss/w:rd%")

    assert url == "http://repl%20icator:p%40ss%2Fw%3Ard%25@couchdb-2:5984/messages"
    assert couchdb.strip_userinfo(url) == SOURCE
    assert couchdb.strip_userinfo("http://u:p@[::1]:5984/db") == "http://[::1]:5984/db"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:5984", None),
        ("https://couchdb-1:6984/messages", None),
        ("http://admin:secret@127.0.0.1:5984", "must not contain credentials"),
        ("ftp://127.0.0.1/db", "must be an http:// or https:// URL"),
        ("http://127.0.0.1:port/db", "cannot be parsed"),
    ],
)
def test_plain_urls(url: str, reason: str | None):
    found = couchdb.check_plain_url(url)

    assert (found is None) if reason is None else found.startswith(reason)
    assert "secret" not in (found or "")


def test_flavour_and_version():
    assert couchdb.detect_flavour({"couchdb": "Welcome", "version": "3.5.0"}) == "couchdb"
    assert couchdb.detect_flavour({"express-pouchdb": "Welcome!"}) == "pouchdb-server"
    assert couchdb.parse_version("3.2.0") >= replication.AUTH_OBJECT_SINCE
    assert couchdb.parse_version("3.1.2") < replication.AUTH_OBJECT_SINCE
    assert couchdb.parse_version(None) == (0,)


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "BadRequest"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "NotFound"),
        (409, "Conflict"),
        (412, "PreconditionFailed"),
        (500, "ServerError"),
        (503, "ServerError"),
        (418, "CouchDBError"),
    ],
)
def test_statuses_map_to_named_errors(status: int, name: str):
    error = couchdb.error_for_status("PUT", "/db/doc", status, {"error": "e", "reason": "r"})

    assert type(error).__name__ == name
    assert str(error) == f"PUT /db/doc answered HTTP {status}: e: r"


def test_no_answer_is_a_connection_error_without_credentials():
    client = couchdb.CouchDBClient(
        f"http://127.0.0.1:{free_port()}", user="admin", password="hunter2-secret", timeout=2
    )

    with pytest.raises(couchdb.ConnectionFailed) as caught:
        client.get("/messages")
    assert str(caught.value).startswith("GET /messages failed: ")
    assert "hunter2" not in str(caught.value)


@pytest.mark.standin
def test_a_refused_password_is_unauthorized_without_the_password(one: PouchServer):
    client = couchdb.CouchDBClient(one.url, user="replicator", password="hunter2-secret")

    with pytest.raises(couchdb.Unauthorized) as caught:
        client.get("/")
    assert caught.value.status == 401
    assert "hunter2" not in str(caught.value)
    assert couchdb.CouchDBClient(one.url).flavour == "pouchdb-server"
