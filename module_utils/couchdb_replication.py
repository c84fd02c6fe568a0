# -*- coding: utf-8 -*-
# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replications on either server flavour, for couchdb_replication, couchdb_replication_job
and couchdb_replication_info.

Every difference between Apache CouchDB 3 (production) and pouchdb-server 4.2 (the test
stand-in) is a method or attribute of one `Replicator` object (replicator_for()): where
credentials go, what the server lets a task edit, how a job is restarted, how its state is
read. The reading of a state is the one classification of
ansible.module_utils.replications (apps/common/replications.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ansible.module_utils.couchdb import (
    FLAVOUR_COUCHDB,
    FLAVOUR_POUCHDB,
    CouchDBClient,
    CouchDBError,
    Forbidden,
    Unauthorized,
    couchdb_argument_spec,
    iso_time,
    poll,
    quote_segment,
    strip_userinfo,
)
from ansible.module_utils.replications import (
    COMPLETED,
    FAILED,
    PROGRESS_COUNTERS,
    RUNNING,
    SETTLE_SECONDS,
    SETTLING,
    WAITING,
    classify,
)

# The _replicator document field with the digest of the credentials couchdb_replication wrote.
DIGEST_FIELD = "ansible_credentials_digest"
# CouchDB reads credentials from the auth object from 3.2 on.
AUTH_OBJECT_SINCE = (3, 2)
POUCHDB_RUNNING = "triggered"


def replication_argument_spec():
    """The connection options and those of one replication and its wait, which
    couchdb_replication and couchdb_replication_job share."""
    spec = couchdb_argument_spec()
    spec.update(
        id=dict(type="str", required=True),
        replicator_db=dict(type="str", default="_replicator"),
        wait_timeout=dict(type="float", default=60),
        settle_time=dict(type="float", default=SETTLE_SECONDS),
        pouchdb_tolerates_rejections=dict(type="bool", default=False),
    )
    return spec


class ReplicationError(CouchDBError):
    """A replication the module will not touch, or one that does not run."""

    def __init__(self, message):
        self.message = message
        super().__init__("", "", reason=message)

    def describe(self):
        return self.message


def endpoint_url(endpoint):
    """The URL of a replication endpoint, a string or {"url": ...}, without credentials."""
    if isinstance(endpoint, dict):
        endpoint = endpoint.get("url")
    return strip_userinfo(endpoint) if isinstance(endpoint, str) else None


def credential_location(endpoint):
    """Where an endpoint carries its credentials: "auth", "headers", "url" or None."""
    if isinstance(endpoint, dict):
        if endpoint.get("auth"):
            return "auth"
        if (endpoint.get("headers") or {}).get("Authorization"):
            return "headers"
        endpoint = endpoint.get("url")
    if isinstance(endpoint, str) and strip_userinfo(endpoint) != endpoint:
        return "url"
    return None


def scheduler_reason(info):
    """CouchDB 3 puts a job's last error in info.error (a string), or info is the string."""
    if isinstance(info, dict):
        return info.get("error")
    if isinstance(info, str):
        return info
    return None


# --- the flavours ----------------------------------------------------------------------------


class Replicator:
    """One server's replicator database, as its flavour lets a task use it.

    client: a CouchDBClient of the server; replicator_db: the database's name;
    tolerates_rejections: pouchdb-server runs under node --unhandled-rejections=warn.
    """

    name = None

    def __init__(self, client, replicator_db="_replicator", tolerates_rejections=False):
        self.client = client
        self.db_path = "/" + quote_segment(replicator_db)
        self.tolerates_rejections = tolerates_rejections

    def doc_path(self, doc_id):
        return self.db_path + "/" + quote_segment(doc_id)

    # --- reading the state ---------------------------------------------------------------

    def report(self, doc_id):
        """The replication as the server reports its state, or None when it shows none."""
        raise NotImplementedError

    def reports(self):
        """[(doc id, report)] of every replication of the database."""
        raise NotImplementedError

    @staticmethod
    def parse(report):
        """{state, reason, since, started} of a report; times in seconds since the epoch."""
        raise NotImplementedError

    @staticmethod
    def sample(report):
        """A look for the stall test: {state, job, marks}; job names the job run (a restarted
        job is another run), marks its progress counters (None when it has none)."""
        raise NotImplementedError

    # --- what a task may write -------------------------------------------------------------

    @property
    def credential_location(self):
        """Where the server reads an endpoint's credentials: "auth" or "url"."""
        return "url"

    def busy(self, doc):
        """Whether the server refuses edits of this document (it runs the replication)."""
        return False

    def refuse_edit(self, doc, doc_id, verb):
        """Raise ReplicationError where the server cannot `verb` the document safely."""

    def before_delete(self, doc_id, doc, timeout):
        """The document to delete, once the server can let it go."""
        return doc

    def refuse_selector(self, selector, source, source_client):
        """Raise ReplicationError where a selector would harm a server."""

    def check_credentials(self, endpoint_clients):
        """Raise ReplicationError where an endpoint refusing its credentials would harm the
        server; endpoint_clients: (name, CouchDBClient) of the source and the target."""

    # --- writing ---------------------------------------------------------------------------

    def put(self, doc_id, body):
        """Write the document; the server's time of the write (its Date header)."""
        self.client.put(self.doc_path(doc_id), body)
        return self.client.server_time

    def write(self, doc_id, body, current=None):
        """Create the document (current None) or update current with body."""
        if current is None:
            return self.put(doc_id, body)
        return self.put(doc_id, dict(body, _rev=current["_rev"]))

    def rewrite(self, doc_id, body, current):
        """Delete and write again: a new replication job on either flavour."""
        self.client.delete(self.doc_path(doc_id), query={"rev": current["_rev"]})
        return self.put(doc_id, body)

    def restart_refusal(self, doc):
        """Why the server cannot restart the replication of doc now, or None."""
        return None

    def restart(self, doc_id, body, current):
        """Start a new job of the replication current, written as body."""
        raise NotImplementedError


class CouchDBReplicator(Replicator):
    """Apache CouchDB 3: states in /_scheduler/docs, nothing written into the document."""

    name = FLAVOUR_COUCHDB

    def report(self, doc_id):
        return self.client.get_or_none(
            "/_scheduler/docs" + self.db_path + "/" + quote_segment(doc_id)
        )

    def reports(self):
        listing = self.client.get("/_scheduler/docs" + self.db_path) or {}
        return [(job.get("doc_id"), job) for job in listing.get("docs", [])]

    @staticmethod
    def parse(report):
        return dict(
            state=report.get("state"),
            reason=scheduler_reason(report.get("info")),
            since=iso_time(report.get("last_updated")),
            started=iso_time(report.get("start_time")),
        )

    @staticmethod
    def sample(report):
        info = report.get("info")
        marks = None
        if isinstance(info, dict) and any(key in info for key in PROGRESS_COUNTERS):
            marks = {key: info.get(key) for key in PROGRESS_COUNTERS}
        job = "%s@%s" % (report.get("id"), report.get("start_time"))
        return dict(state=report.get("state"), job=job, marks=marks)

    @property
    def credential_location(self):
        return "auth" if self.client.version >= AUTH_OBJECT_SINCE else "url"

    def refuse_selector(self, selector, source, source_client):
        """pouchdb-server as the source exits on the _selector changes filter (measured)."""
        if not selector:
            return
        parts = urlsplit(source)
        root = urlunsplit(
            (parts.scheme, parts.netloc, parts.path.rstrip("/").rsplit("/", 1)[0], "", "")
        )
        try:
            source_is_pouchdb = source_client(root).flavour == FLAVOUR_POUCHDB
        except CouchDBError:
            return  # not reachable from here: the server that replicates may reach it
        if source_is_pouchdb:
            raise ReplicationError(SELECTOR_REFUSED)

    def restart(self, doc_id, body, current):
        # A deleted and rewritten document is a new job, without the old back-off.
        return self.rewrite(doc_id, body, current)


SELECTOR_REFUSED = (
    "pouchdb-server cannot serve a replication with a selector: the source's process "
    "exits on the _selector changes filter. Nothing was written; leave out selector."
)


class PouchDBReplicator(Replicator):
    """pouchdb-server 4.2: _replication_state in the document; it refuses edits of a running
    (triggered) document, and its process exits when one is deleted or fails authentication
    unless it runs under node --unhandled-rejections=warn (tolerates_rejections)."""

    name = FLAVOUR_POUCHDB

    def report(self, doc_id):
        return self.client.get_or_none(self.doc_path(doc_id))

    def reports(self):
        listing = self.client.get(self.db_path + "/_all_docs", query={"include_docs": "true"}) or {}
        return [
            (row.get("id"), row.get("doc") or {})
            for row in listing.get("rows", [])
            if not row.get("id", "").startswith("_design/")
        ]

    @staticmethod
    def parse(report):
        time_ = iso_time(report.get("_replication_state_time"))
        return dict(
            state=report.get("_replication_state"),
            reason=report.get("_replication_state_reason"),
            since=time_,
            started=time_,
        )

    @staticmethod
    def sample(report):
        # No progress counters; _replication_id and _replication_state_time change when the
        # replication is started again.
        job = "%s@%s" % (report.get("_replication_id"), report.get("_replication_state_time"))
        return dict(state=report.get("_replication_state"), job=job, marks=None)

    def busy(self, doc):
        return (doc or {}).get("_replication_state") == POUCHDB_RUNNING

    def refuse_edit(self, doc, doc_id, verb):
        if not self.busy(doc) or self.tolerates_rejections:
            return
        raise ReplicationError(
            "pouchdb-server cannot %s the running replication %r: it refuses any edit of a "
            "triggered replication document (HTTP 403), and deleting one makes its process exit "
            "(an unhandled promise rejection in its replicator). Nothing was written; the server "
            "runs on. Run pouchdb-server under node --unhandled-rejections=warn and set "
            "pouchdb_tolerates_rejections, or remove the document while its state is error or completed."
            % (verb, doc_id)
        )

    def before_delete(self, doc_id, doc, timeout):
        """A one-off replication ends by itself: give it timeout seconds to do so."""
        if doc.get("continuous") or not self.busy(doc):
            return doc
        doc, _ended = poll(
            lambda: self.client.get(self.doc_path(doc_id)),
            lambda doc: not self.busy(doc),
            timeout,
        )
        return doc

    def refuse_selector(self, selector, source, source_client):
        """pouchdb-server 4.2 reads the _selector changes filter as a design document
        "_design/_selector" and its process exits on the 404 (measured); its peers are the
        same kind."""
        if selector:
            raise ReplicationError(SELECTOR_REFUSED)

    def check_credentials(self, endpoint_clients):
        """A replication that fails authentication kills the process, at every start."""
        if self.tolerates_rejections:
            return
        for name, client in endpoint_clients:
            try:
                client.get("/")
            except (Unauthorized, Forbidden) as exc:
                raise ReplicationError(
                    "The %s refuses the replication's credentials (HTTP %s: %s), and pouchdb-server "
                    "exits when a replication fails authentication. Nothing was written."
                    % (name, exc.status, exc.reason or exc.error)
                ) from None
            except CouchDBError:
                pass  # not reachable from here, or no database yet: the replicator retries

    def write(self, doc_id, body, current=None):
        if current is not None and self.busy(current):
            # Only its replicator may edit it; the tolerant server survives a delete.
            return self.rewrite(doc_id, body, current)
        return super().write(doc_id, body, current)

    def restart_refusal(self, doc):
        if self.busy(doc) and not self.tolerates_rejections:
            return (
                "pouchdb-server runs the replication and retries it by itself, with a back-off of "
                "at most 10 minutes; it cannot restart it without its process exiting"
            )
        return None

    def restart(self, doc_id, body, current):
        # A rewrite without the _replication_* fields starts a replication that is not running.
        return self.write(doc_id, body, current)


def replicator_for(client, replicator_db="_replicator", tolerates_rejections=False):
    """The Replicator of the client's server, by its flavour (GET /)."""
    cls = PouchDBReplicator if client.flavour == FLAVOUR_POUCHDB else CouchDBReplicator
    return cls(client, replicator_db, tolerates_rejections)


# --- states ----------------------------------------------------------------------------------


def settle_replication(doc, now, settle_seconds=SETTLE_SECONDS, written_at=None):
    """Whether one replication runs, judged on the server's own clock. Pure: no I/O.

    doc: the replication as the server reports it: a CouchDB 3 /_scheduler/docs document
      (state, info, last_updated, start_time), a pouchdb-server _replicator document
      (_replication_state, _replication_state_reason, _replication_state_time), or None
      when the server shows none (yet).
    now: the server's time when doc was read (its Date header), seconds since the epoch.
    settle_seconds: how long the replication must have stayed running.
    written_at: the server's time of the task's own write of the document, or None; a job
      that started before it is the one the write replaced, and shows nothing about the new.

    Returns {"verdict", "state", "reason", "running_for"}: running_for in seconds (None when
    not running); verdict the condition of replications.classify() (running, settling,
    completed, failed or waiting), or waiting for the job the write replaced.
    """
    if not isinstance(doc, dict):
        return dict(verdict=WAITING, state=None, reason=None, running_for=None)
    kind = PouchDBReplicator if ("_replication_state" in doc or "_id" in doc) else CouchDBReplicator
    parsed = kind.parse(doc)
    result = dict(state=parsed["state"], reason=parsed["reason"], running_for=None)
    started = parsed["started"]
    if written_at is not None and (started is None or started < written_at):
        return dict(result, verdict=WAITING)
    running_for = None
    if parsed["since"] is not None and now is not None:
        running_for = max(0.0, now - parsed["since"])
    verdict = classify(parsed["state"], parsed["reason"], running_for, settle_seconds)
    if verdict in (RUNNING, SETTLING):
        result["running_for"] = running_for
    return dict(result, verdict=verdict)


def read_replications(replicator, settle_seconds=SETTLE_SECONDS):
    """[{id, source, target, state, reason, condition, healthy, running_for}] of every
    replication document of a server (a Replicator), sorted by id.

    condition: settle_replication()'s verdict on the server's clock; healthy: running (for
    settle_seconds, with no error) or completed; running_for: seconds it has been running,
    null when it is not.
    """
    replications = []
    reports = replicator.reports()
    now = replicator.client.server_time  # the server's clock when it listed them
    for doc_id, report in reports:
        settle = settle_replication(report, now, settle_seconds)
        running_for = settle["running_for"]
        replications.append(
            dict(
                id=doc_id,
                source=endpoint_url(report.get("source")),
                target=endpoint_url(report.get("target")),
                state=settle["state"],
                reason=settle["reason"],
                condition=settle["verdict"],
                healthy=settle["verdict"] in (RUNNING, COMPLETED),
                running_for=None if running_for is None else round(running_for, 1),
            )
        )
    return sorted(replications, key=lambda item: item["id"] or "")


# --- the job: restart, wait ---------------------------------------------------------------------


class ReplicationJob:
    """The job of one replication document: restart it, wait until it runs."""

    def __init__(self, replicator, doc_id):
        self.replicator = replicator
        self.doc_id = doc_id

    def restart(self, body, current):
        """Start a new job; the server's time of the write. Raises ReplicationError where the
        server cannot (restart_refusal)."""
        refusal = self.replicator.restart_refusal(current)
        if refusal:
            raise ReplicationError("Replication %r not restarted: %s." % (self.doc_id, refusal))
        return self.replicator.restart(self.doc_id, body, current)

    def status(self, settle_seconds, written_at=None):
        report = self.replicator.report(self.doc_id)
        return settle_replication(
            report, self.replicator.client.server_time, settle_seconds, written_at
        )

    def wait(self, continuous, settle_seconds, timeout, written_at=None):
        """Poll until the replication has stayed running for settle_seconds with no error (or,
        one that is not continuous, has completed); {state, reason, running_for}. Raises
        ReplicationError with the server's reason when it fails, or when timeout passes first."""
        wanted = (RUNNING, COMPLETED) if continuous else (COMPLETED,)
        status, done = poll(
            lambda: self.status(settle_seconds, written_at),
            lambda status: status["verdict"] == FAILED or status["verdict"] in wanted,
            timeout,
        )
        if status["verdict"] == FAILED:
            raise ReplicationError(
                "Replication %r is %s: %s"
                % (self.doc_id, status["state"], status["reason"] or "no reason given")
            )
        if not done:
            running = ""
            if status["running_for"] is not None:
                running = ", running for %.1f s of the settle time %s s" % (
                    status["running_for"],
                    settle_seconds,
                )
            raise ReplicationError(
                "Replication %r did not settle within %s s (state: %s%s)"
                % (self.doc_id, timeout, status["state"], running)
            )
        return dict(
            state=status["state"], reason=status["reason"], running_for=status["running_for"]
        )


def endpoint_client(url, user, password, params):
    """A CouchDBClient of an endpoint server with the task's timeout and certificate checks."""
    return CouchDBClient(
        url,
        user=user,
        password=password,
        timeout=params["timeout"],
        validate_certs=params["validate_certs"],
    )
