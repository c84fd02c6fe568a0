#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: couchdb_replication_info
short_description: Read the state of every replication of a CouchDB server
description:
  - Lists the replications of one server's replicator database with their state and the
    server's reason, for health checks and verify playbooks. Changes nothing.
  - Apache CouchDB 3 reports states from C(/_scheduler/docs) (C(running), C(pending),
    C(crashing), C(failed), C(error), C(completed)); pouchdb-server has no scheduler and
    reports the C(_replication_state) of each document (C(triggered), C(error), C(completed)).
  - URLs come without credentials.
  - With O(stall_window), it also tells which running replications are stalled, that is
    report C(running) (pouchdb-server C(triggered)) but do not carry the source's changes.
    CouchDB 3 keeps reporting C(running) for a pull whose changes feed hangs on a
    connection a partition or a restarted peer left dead, and only updates a job's
    statistics when it makes progress, so neither the state nor C(changes_pending) shows
    it. The module reads the newest changes of each source (C(_changes?descending=true)),
    asks this server which of those revisions it lacks (C(_revs_diff)), waits
    O(stall_window) seconds and asks again. A revision still missing, while the job is the
    same one and (CouchDB 3) its progress counters did not move, makes the replication
    stalled. The same test holds on pouchdb-server, which exposes no progress counters.
author:
  - kuno authors
attributes:
  check_mode:
    support: full
    description: Reads only, in check mode as otherwise.
  diff_mode:
    support: none
extends_documentation_fragment:
  - kuno_couchdb
options:
  replicator_db:
    description: The replicator database.
    type: str
    default: _replicator
  stall_window:
    description:
      - Seconds between the two looks that tell a stalled replication; V(0) does not look
        (C(stalled) is then null).
      - A source is read only when its replication runs; the wait only happens when this
        server lacks some of a source's newest changes.
    type: float
    default: 0
  stall_probe_changes:
    description: How many of each source's newest changes are checked.
    type: int
    default: 100
  source_urls:
    description:
      - Where this module reaches a source server that the replications name otherwise,
        from the server URL as the replication names it (scheme, host, port) to the URL to read
        it at (a container name on a private network to its address). A source not
        listed is read at its own URL.
      - Only pulls into this server are checked (the target is read on O(url)).
    type: dict
    default: {}
  source_user:
    description: User for reading the sources; by default O(user).
    type: str
  source_password:
    description: Its password; by default O(password). Never logged.
    type: str
seealso:
  - module: couchdb_replication
  - name: CouchDB replication scheduler
    description: The states of /_scheduler/docs.
    link: https://docs.couchdb.org/en/stable/replication/replicator.html#replication-states
"""

EXAMPLES = r"""
- name: Read this node's replications
  couchdb_replication_info:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
  register: __couchdb_replications

- name: Every replication runs
  ansible.builtin.assert:
    that: __couchdb_replications.replications | rejectattr('healthy') | list | length == 0
    fail_msg: "{{ __couchdb_replications.replications | rejectattr('healthy') | list }}"

- name: Wait until the replications of this node run
  couchdb_replication_info:
    url: http://127.0.0.1:5984
  register: __couchdb_replications
  until: __couchdb_replications.replications | selectattr('state', 'in', ['running', 'triggered']) | list | length == 2
  retries: 30
  delay: 2

- name: Find the replications to restart (failing or stalled)
  couchdb_replication_info:
    url: http://172.18.0.3:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    stall_window: 5
    source_urls:
      http://kuno-couchdb-node2:5984: http://172.18.0.4:5984
  register: __couchdb_replications
  # __couchdb_replications.restart: the ids of those that need a new job
"""

RETURN = r"""
replications:
  description: Every replication document of the replicator database, sorted by id.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The document id.
      type: str
      sample: messages-from-couchdb-2
    source:
      description: The source URL, without credentials.
      type: str
      sample: http://couchdb-2:5984/messages
    target:
      description: The target URL, without credentials.
      type: str
      sample: http://couchdb-1:5984/messages
    state:
      description: The state the server reports; null before it has looked at the document.
      type: str
      sample: running
    reason:
      description: The server's reason for a failing state, else null.
      type: str
      sample: null
    healthy:
      description: Whether the state is C(running), C(completed) or (pouchdb-server) C(triggered).
      type: bool
      sample: true
    stalled:
      description:
        - Whether the replication runs but did not carry, within O(stall_window) seconds, a
          change of its source that this server lacks. Null when not looked at
          (O(stall_window) 0, not running, source or target unreadable).
      type: bool
      sample: false
    missing_changes:
      description:
        - How many of the source's newest changes (at most O(stall_probe_changes)) this
          server lacked at the first look; null when not looked at.
      type: int
      sample: 0
    stall_error:
      description: Why a running replication could not be looked at (a source that does not answer), else null.
      type: str
      sample: null
    condition:
      description:
        - V(failing) (CouchDB's C(crashing), C(failed), C(error), or C(pending) with a
          reason; pouchdb-server's C(error)), V(stalled), V(running) (also C(triggered)),
          V(completed), or V(starting) (no state yet, or C(pending)/C(initializing) without
          a reason).
      type: str
      sample: running
    needs_restart:
      description:
        - Whether a new job (the document deleted and written again) would help, see
          RV(restart). V(failing) ones, and V(stalled) ones on CouchDB.
        - Not a stalled one on pouchdb-server, which does not start a running replication
          whose document was deleted and written again (its replicator takes the new
          document for a duplicate of the one it still runs), and whose image drops dead
          connections by itself (TCP keep-alive).
      type: bool
      sample: false
restart:
  description: The ids of the replications that need a restart (RV(replications[].needs_restart)), sorted.
  returned: always
  type: list
  elements: str
  sample: [kuno-messages-from-node2]
flavour:
  description: The server's flavour, V(couchdb) or V(pouchdb-server).
  returned: always
  type: str
  sample: couchdb
"""

import time
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.couchdb import (
    FAILED_STATES,
    FLAVOUR_COUCHDB,
    CouchDBClient,
    CouchDBError,
    CouchDBModule,
    couchdb_argument_spec,
    quote_segment,
    read_replications,
    run_module,
    strip_userinfo,
)


# States in which a replication should be carrying changes: CouchDB 3's scheduler, pouchdb-server.
RUNNING_STATES = ("running", "triggered")
# CouchDB 3's counters of a job (info in /_scheduler/docs); any change is progress.
PROGRESS_COUNTERS = (
    "revisions_checked",
    "missing_revisions_found",
    "docs_read",
    "docs_written",
    "doc_write_failures",
    "source_seq",
    "through_seq",
    "checkpointed_source_seq",
)

# --- pure functions: what a look at a replication shows --------------------------------


def scheduler_sample(doc):
    """A look at a CouchDB 3 replication from its /_scheduler/docs entry.

    {state, job, marks}: job names the job run (its replication id and start time: a
    restarted job is another run), marks are its progress counters (null before the job
    has reported any).
    """
    info = doc.get("info")
    marks = None
    if isinstance(info, dict) and any(key in info for key in PROGRESS_COUNTERS):
        marks = {key: info.get(key) for key in PROGRESS_COUNTERS}
    return dict(
        state=doc.get("state"), job="%s@%s" % (doc.get("id"), doc.get("start_time")), marks=marks
    )


def replicator_doc_sample(doc):
    """A look at a pouchdb-server replication from its _replicator document.

    pouchdb-server exposes no progress counters; its _replication_id and
    _replication_state_time change when the replication is started again.
    """
    return dict(
        state=doc.get("_replication_state"),
        job="%s@%s" % (doc.get("_replication_id"), doc.get("_replication_state_time")),
        marks=None,
    )


def newest_revisions(changes):
    """{doc id: [revisions]} of a _changes answer (style=all_docs), for _revs_diff."""
    revisions = {}
    for row in (changes or {}).get("results") or []:
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            continue
        revs = [
            change.get("rev") for change in row.get("changes") or [] if isinstance(change, dict)
        ]
        revisions.setdefault(row["id"], [])
        revisions[row["id"]].extend(
            rev for rev in revs if isinstance(rev, str) and rev not in revisions[row["id"]]
        )
    return {doc_id: revs for doc_id, revs in revisions.items() if revs}


def missing_revisions(revs_diff):
    """{doc id: [revisions]} that a _revs_diff answer says the server lacks."""
    missing = {}
    for doc_id, entry in (revs_diff or {}).items():
        revs = entry.get("missing") if isinstance(entry, dict) else None
        if revs:
            missing[doc_id] = sorted(revs)
    return missing


def assess_stall(before, after):
    """Whether a replication is stalled, from two looks a stall window apart.

    before and after: {state, job, marks, missing}, missing being {doc id: [revisions]} of
    the source's newest changes this server lacked at that look (after: of those lacking
    before), or None when unknown. Returns True (stalled), False, or None (cannot tell).

    Stalled: it reports running at both looks, as the same job, its progress counters (if
    it has any) did not move, and a change it lacked before it still lacks.
    """
    if after is None or after.get("state") not in RUNNING_STATES:
        return None
    if before is None or before.get("missing") is None:
        return None
    if not before["missing"]:
        return False
    if before.get("state") not in RUNNING_STATES or before.get("job") != after.get("job"):
        return False  # started again meanwhile: a new job, give it its chance
    if (
        before.get("marks") is not None
        and after.get("marks") is not None
        and before["marks"] != after["marks"]
    ):
        return False  # progress: it is working through a backlog
    if after.get("missing") is None:
        return None
    return any(
        set(revs) & set(after["missing"].get(doc_id, ()))
        for doc_id, revs in before["missing"].items()
    )


def needs_restart(condition_, flavour):
    """Whether a replication in this condition on this flavour wants a new job."""
    return condition_ == "failing" or (condition_ == "stalled" and flavour == FLAVOUR_COUCHDB)


def condition(replication):
    """failing, stalled, running, completed or starting (see RETURN)."""
    state = replication.get("state")
    if state in FAILED_STATES or (state == "pending" and replication.get("reason")):
        return "failing"
    if replication.get("stalled"):
        return "stalled"
    if state in RUNNING_STATES:
        return "running"
    if state == "completed":
        return "completed"
    return "starting"


# --- reading --------------------------------------------------------------------------------


def split_db_url(url):
    """(server URL, database path) of a database URL: ("http://h:5984", "/messages")."""
    parts = urlsplit(url)
    return "%s://%s" % (parts.scheme, parts.netloc), parts.path.rstrip("/")


class ReplicationInfo(CouchDBModule):
    def __init__(self, module):
        super().__init__(module)
        if self.params["stall_window"] < 0:
            raise ValueError("stall_window must be 0 or more seconds.")
        if self.params["stall_probe_changes"] < 1:
            raise ValueError("stall_probe_changes must be at least 1.")
        self._sources = {}

    def execute(self):
        replications = read_replications(self.client, self.params["replicator_db"])
        for replication in replications:
            replication.update(stalled=None, missing_changes=None, stall_error=None)
        if self.params["stall_window"] > 0:
            self.look_for_stalls(replications)
        flavour = self.client.flavour
        for replication in replications:
            replication["condition"] = condition(replication)
            replication["needs_restart"] = needs_restart(replication["condition"], flavour)
        return dict(
            changed=False,
            flavour=flavour,
            replications=replications,
            restart=sorted(r["id"] for r in replications if r["needs_restart"] and r["id"]),
        )

    # --- stalls ------------------------------------------------------------------------------

    def samples(self):
        """{doc id: {state, job, marks}} of every replication, as the server shows it now."""
        db_path = "/" + quote_segment(self.params["replicator_db"])
        if self.client.flavour == FLAVOUR_COUCHDB:
            listing = self.client.get("/_scheduler/docs" + db_path) or {}
            return {doc.get("doc_id"): scheduler_sample(doc) for doc in listing.get("docs", [])}
        listing = self.client.get(db_path + "/_all_docs", query={"include_docs": "true"}) or {}
        return {
            row.get("id"): replicator_doc_sample(row.get("doc") or {})
            for row in listing.get("rows", [])
        }

    def source_client(self, server):
        if server not in self._sources:
            url = (self.params["source_urls"] or {}).get(server, server)
            user = (
                self.params["source_user"]
                if self.params["source_user"] is not None
                else self.params["user"]
            )
            password = self.params["source_password"]
            if password is None and self.params["source_user"] is None:
                password = self.params["password"]
            self._sources[server] = CouchDBClient(
                strip_userinfo(url).rstrip("/"),
                user=user,
                password=password,
                timeout=self.params["timeout"],
                validate_certs=self.params["validate_certs"],
            )
        return self._sources[server]

    def lacking(self, target_path, revisions):
        """{doc id: [revisions]} of revisions this server lacks in its database target_path."""
        if not revisions:
            return {}
        return missing_revisions(self.client.post(target_path + "/_revs_diff", body=revisions))

    def look_for_stalls(self, replications):
        first = self.samples()
        looked = {}
        for replication in replications:
            sample = first.get(replication["id"])
            if sample is None or sample["state"] not in RUNNING_STATES:
                continue
            if not replication.get("source") or not replication.get("target"):
                continue
            source_server, source_path = split_db_url(replication["source"])
            _target_server, target_path = split_db_url(replication["target"])
            try:
                changes = self.source_client(source_server).get(
                    source_path + "/_changes",
                    query={
                        "descending": "true",
                        "limit": self.params["stall_probe_changes"],
                        "style": "all_docs",
                    },
                )
                sample["missing"] = self.lacking(target_path, newest_revisions(changes))
            except CouchDBError as exc:
                replication["stall_error"] = str(exc)
                continue
            replication["missing_changes"] = sum(len(revs) for revs in sample["missing"].values())
            looked[replication["id"]] = (sample, target_path)

        if any(sample["missing"] for sample, _path in looked.values()):
            time.sleep(self.params["stall_window"])
            second = self.samples()
        else:
            second = first
        for replication in replications:
            if replication["id"] not in looked:
                continue
            before, target_path = looked[replication["id"]]
            after = dict(second.get(replication["id"]) or {})
            try:
                after["missing"] = (
                    self.lacking(target_path, before["missing"]) if before["missing"] else {}
                )
            except CouchDBError as exc:
                replication["stall_error"] = str(exc)
                continue
            replication["stalled"] = assess_stall(before, after)


def argument_spec():
    """The connection options and this module's own."""
    spec = couchdb_argument_spec()
    spec.update(
        replicator_db=dict(type="str", default="_replicator"),
        stall_window=dict(type="float", default=0),
        stall_probe_changes=dict(type="int", default=100),
        source_urls=dict(type="dict", default={}),
        source_user=dict(type="str"),
        source_password=dict(type="str", no_log=True),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, ReplicationInfo)


if __name__ == "__main__":
    main()
