"""Normalising and comparing, without Ansible; HTTP errors against real servers and ports."""

from __future__ import annotations

from typing import Any

import pytest

from tests.modules.helpers import load_library, load_module_utils
from tests.support.pouchdb import PouchServer, free_port

couchdb = load_module_utils()
replications = load_module_utils("couchdb_replication")
states = load_module_utils("replications")
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


# --- Mango selectors in CouchDB's normal form ------------------------------------------------

# (as written, as CouchDB 3 stores and lists it): DESIGN.md "CouchDB flavours" (measured on
# 3.5.0) and the examples in the comments of CouchDB 3.5.0's src/mango/src/mango_selector.erl.
COUCHDB_NORMAL_FORMS = [
    # DESIGN.md: GET /db/_index lists {"type": "message"} as {"type": {"$eq": "message"}}.
    ({"type": "message"}, {"type": {"$eq": "message"}}),
    # norm_ops: "An implicit $and", in key order.
    (
        {"type": "message", "recipientId": "bob"},
        {"$and": [{"type": {"$eq": "message"}}, {"recipientId": {"$eq": "bob"}}]},
    ),
    # norm_fields: "{foo: {bar: {$gt: 10}}}" -> "{"foo.bar": {$gt: 10}}".
    ({"foo": {"bar": {"$gt": 10}}}, {"foo.bar": {"$gt": 10}}),
    # norm_fields: "{foo: {$and: [{$gt: 5}, {$lt: 10}]}}"
    #           -> "{$and: [{foo: {$gt: 5}}, {foo: {$lt: 10}}]}".
    (
        {"foo": {"$and": [{"$gt": 5}, {"$lt": 10}]}},
        {"$and": [{"foo": {"$gt": 5}}, {"foo": {"$lt": 10}}]},
    ),
    # Two operators on one field are the same implicit $and.
    (
        {"expiresAt": {"$gt": 5, "$lt": 10}},
        {"$and": [{"expiresAt": {"$gt": 5}}, {"expiresAt": {"$lt": 10}}]},
    ),
    # norm_negations: "{$not: {foo: {$gt: 10}}}" -> "{foo: {$lte: 10}}".
    ({"$not": {"foo": {"$gt": 10}}}, {"foo": {"$lte": 10}}),
    # De Morgan: "{$not: {$and: [{foo: {$gt: 10}}, {foo: {$lt: 5}}]}}"
    #         -> "{$or: [{foo: {$lte: 10}}, {foo: {$gte: 5}}]}".
    (
        {"$not": {"$and": [{"foo": {"$gt": 10}}, {"foo": {"$lt": 5}}]}},
        {"$or": [{"foo": {"$lte": 10}}, {"foo": {"$gte": 5}}]},
    ),
    # $nor is the $and of the negations; a $not of $exists flips it; a $not of what cannot
    # be negated ($regex) stays, below the field.
    (
        {"$nor": [{"type": "draft"}, {"deleted": {"$exists": True}}]},
        {"$and": [{"type": {"$ne": "draft"}}, {"deleted": {"$exists": False}}]},
    ),
    ({"name": {"$not": {"$regex": "^x"}}}, {"name": {"$not": {"$regex": "^x"}}}),
    # The $elemMatch example of match/3's comment: normalised inside on its own.
    (
        {"field_name": {"$elemMatch": {"$gte": 80, "$lt": 85}}},
        {"field_name": {"$elemMatch": {"$and": [{"": {"$gte": 80}}, {"": {"$lt": 85}}]}}},
    ),
    # Terminals keep their argument as it is, an object as an $eq value too.
    ({"tags": {"$in": ["a", {"b": 1}]}}, {"tags": {"$in": ["a", {"b": 1}]}}),
    ({"meta": {"$eq": {"b": 1}}}, {"meta": {"$eq": {"b": 1}}}),
    ({"$text": "hello"}, {"$default": {"$text": "hello"}}),
]


@pytest.mark.parametrize(("given", "listed"), COUCHDB_NORMAL_FORMS)
def test_selectors_normalise_as_couchdb_3_lists_them(given: dict, listed: dict):
    assert couchdb.mango_normal_form(given) == listed
    # The server's own listing is already normal: both sides of a comparison go through it.
    assert couchdb.mango_normal_form(listed) == listed
    assert couchdb.comparable_selector(given) == couchdb.comparable_selector(listed)


def test_selectors_compare_regardless_of_key_order_but_not_of_meaning():
    one = {"type": "message", "recipientId": {"$exists": True}}
    other = {"recipientId": {"$exists": True}, "type": "message"}

    assert couchdb.comparable_selector(one) == couchdb.comparable_selector(other)
    assert couchdb.comparable_selector({"type": "message"}) != couchdb.comparable_selector(
        {"type": "receipt"}
    )
    assert couchdb.comparable_selector({"a": {"$gt": 1}}) != couchdb.comparable_selector(
        {"a": {"$gte": 1}}
    )
    assert couchdb.comparable_selector(None) is None
    assert couchdb.comparable_selector({}) is None


@pytest.mark.parametrize("selector", [["type"], "message", {"$and": "type"}, {"$not": 1}])
def test_what_is_no_selector_is_a_clear_error(selector: Any):
    with pytest.raises(ValueError, match="selector"):
        couchdb.mango_normal_form(selector)


def test_an_index_listed_by_couchdb_3_equals_the_task_that_made_it():
    """Issue 11 item 5: CouchDB 3.5 lists the partial filter normalised; no update follows."""
    listed = {
        "ddoc": "_design/kuno",
        "name": "recipient-timestamp-index",
        "type": "json",
        "partial_filter_selector": {"type": {"$eq": "message"}},
        "def": {
            "fields": [{"recipientId": "asc"}, {"timestamp": "asc"}],
            "partial_filter_selector": {"type": {"$eq": "message"}},
        },
    }
    task = index.Index.__new__(index.Index)
    task.params = {
        "database": "messages",
        "ddoc": "kuno",
        "name": "recipient-timestamp-index",
        "fields": ["recipientId", "timestamp"],
        "partial_filter_selector": {"type": "message"},
    }

    assert task.normalise(listed) == task.desired(listed)


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


# --- settling replications ---------------------------------------------------------------------

# /_scheduler/docs/_replicator/{id} as CouchDB 3.5 answers, in the shape of its
# couch_replicator_doc_processor:ejson_doc/2 and couch_replicator_scheduler:job_summary/2
# (info: the job's stats while running, {"error": reason} after a crash), with the times of
# issue 11 item 6: a pull whose source refuses its password shows running, then crashing
# (replication_auth_error) 2.4-5.4 s later.
STARTED = "2026-11-29T10:00:00Z"
T0 = 1795946400.0  # STARTED in seconds since the epoch
AUTH_ERROR = (
    "{replication_auth_error,{session_request_unauthorized,"
    '"http://couchdb-2:5984/_session","admin"}}'
)
SCHEDULER_RUNNING = {
    "database": "_replicator",
    "doc_id": "kuno-messages-from-couchdb-2",
    "id": "6a1b1f1b7a7dbe6f4b5c3e9a8d2f0c11+continuous",
    "node": "nonode@nohost",
    "source": "http://couchdb-2:5984/messages/",
    "target": "http://couchdb-1:5984/messages/",
    "state": "running",
    "info": {
        "revisions_checked": 0,
        "missing_revisions_found": 0,
        "docs_read": 0,
        "docs_written": 0,
        "changes_pending": None,
        "doc_write_failures": 0,
        "bulk_get_docs": 0,
        "bulk_get_attempts": 0,
        "checkpointed_source_seq": 0,
    },
    "error_count": 0,
    "last_updated": STARTED,
    "start_time": STARTED,
    "source_proxy": None,
    "target_proxy": None,
}
SCHEDULER_CRASHING = {
    **SCHEDULER_RUNNING,
    "state": "crashing",
    "info": {"error": AUTH_ERROR},
    "error_count": 1,
    "last_updated": "2026-11-29T10:00:04Z",
}
SCHEDULER_PENDING_WITH_ERROR = {
    **SCHEDULER_RUNNING,
    "state": "pending",
    "info": {"error": "db_not_found: could not open http://couchdb-2:5984/messages/"},
    "error_count": 1,
}
SCHEDULER_PENDING = {**SCHEDULER_RUNNING, "state": "pending", "info": None}
# pouchdb-server's replicator writes the state into the _replicator document itself.
POUCHDB_TRIGGERED = {
    "_id": "kuno-messages-from-two",
    "_rev": "2-9e0c",
    "source": "http://replicator:secret@127.0.0.1:41001/messages",
    "target": "http://127.0.0.1:41002/messages",
    "continuous": True,
    "_replication_id": "f0e1d2c3",
    "_replication_state": "triggered",
    "_replication_state_time": "2026-11-29T10:00:00.250Z",
}
POUCHDB_ERROR = {
    **POUCHDB_TRIGGERED,
    "_rev": "3-1a2b",
    "_replication_state": "error",
    "_replication_state_time": "2026-11-29T10:00:00.262Z",
    "_replication_state_reason": "Name or password is incorrect.",
}


def settle(doc: Any, now: float, written_at: float | None = None) -> dict[str, Any]:
    return replications.settle_replication(doc, now, settle_seconds=10.0, written_at=written_at)


def test_a_running_job_counts_only_after_the_settle_time():
    assert couchdb.iso_time(STARTED) == T0

    early = settle(SCHEDULER_RUNNING, T0 + 2.4)
    assert early["verdict"] == "settling"
    assert early["running_for"] == pytest.approx(2.4)
    settled = settle(SCHEDULER_RUNNING, T0 + 10)
    assert settled == {
        "verdict": "running",
        "state": "running",
        "reason": None,
        "running_for": 10.0,
    }


def test_the_default_settle_time_outlasts_couchdbs_crash_after_bad_credentials():
    # Issue 11 item 6: crashing came 2.4-5.4 s after running.
    assert states.SETTLE_SECONDS > 5.4
    verdict = replications.settle_replication(SCHEDULER_RUNNING, T0 + 5.4)["verdict"]
    assert verdict == "settling"


def test_crashing_with_an_auth_error_fails_with_the_servers_reason():
    result = settle(SCHEDULER_CRASHING, T0 + 30)

    assert result["verdict"] == "failed"
    assert result["state"] == "crashing"
    assert result["reason"].startswith("{replication_auth_error,")


def test_pending_with_an_error_fails_and_pending_without_one_waits():
    assert settle(SCHEDULER_PENDING_WITH_ERROR, T0 + 30)["verdict"] == "failed"
    assert settle(SCHEDULER_PENDING_WITH_ERROR, T0 + 30)["reason"].startswith("db_not_found")
    assert settle(SCHEDULER_PENDING, T0 + 30)["verdict"] == "waiting"
    assert settle(None, T0)["verdict"] == "waiting"


def test_a_running_job_with_an_error_in_its_info_is_not_running():
    doc = {**SCHEDULER_RUNNING, "info": {"error": "changes_reader_died"}}

    assert settle(doc, T0 + 60)["verdict"] == "failed"


def test_after_a_write_only_a_job_started_since_counts():
    # The scheduler may still show the job the write replaced: neither its long run nor
    # its crash says anything about the new document.
    assert settle(SCHEDULER_RUNNING, T0 + 600, written_at=T0 + 590)["verdict"] == "waiting"
    assert settle(SCHEDULER_CRASHING, T0 + 600, written_at=T0 + 590)["verdict"] == "waiting"
    assert settle(SCHEDULER_RUNNING, T0 + 12, written_at=T0)["verdict"] == "running"


def test_pouchdb_server_states():
    triggered = settle(POUCHDB_TRIGGERED, T0 + 1)
    assert triggered["verdict"] == "settling"
    assert triggered["running_for"] == pytest.approx(0.75)
    assert settle(POUCHDB_TRIGGERED, T0 + 11)["verdict"] == "running"
    assert settle(POUCHDB_ERROR, T0 + 1) == {
        "verdict": "failed",
        "state": "error",
        "reason": "Name or password is incorrect.",
        "running_for": None,
    }
    completed = {**POUCHDB_TRIGGERED, "continuous": False, "_replication_state": "completed"}
    assert settle(completed, T0 + 1)["verdict"] == "completed"
    # Written, not yet picked up by the replicator: no state, no time.
    fresh = {k: v for k, v in POUCHDB_TRIGGERED.items() if not k.startswith("_replication")}
    assert settle(fresh, T0 + 1, written_at=T0)["verdict"] == "waiting"


def test_times_as_the_servers_write_them():
    assert couchdb.http_date("Sun, 29 Nov 2026 10:00:00 GMT") == T0
    assert couchdb.iso_time("2026-11-29T10:00:00.250Z") == T0 + 0.25
    assert couchdb.iso_time("yesterday") is None
    assert couchdb.http_date(None) is None
