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
  pull_databases:
    description:
      - The databases this server pulls from every one of O(pull_peers), to name the
        replications it should have (C(<id_prefix><database>-from-<peer>), the ids the
        replication role writes). Then the module also returns RV(pulls), RV(wanted),
        RV(missing), RV(unwanted) and each replication's RV(replications[].wanted), and
        RV(restart) holds wanted ones only.
    type: list
    elements: str
  pull_peers:
    description: The node names this server pulls from (with O(pull_databases)).
    type: list
    elements: str
    default: []
  id_prefix:
    description: The prefix of the ids of the replications the replication role manages.
    type: str
    default: kuno-
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
      description:
        - Whether RV(replications[].condition) is V(running) or V(completed) (before the
          stall test), that is running (pouchdb-server C(triggered)) for 10 s on the server's clock
          with no error in its job info, or a one-off replication that completed.
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
        - The one classification of replication states (C(kuno.common.replications), the
          standard node's C(/health) reads it too).
        - V(failed) (CouchDB's C(crashing), C(failed), C(error), or any other state with an
          error, such as C(pending) after a crash; pouchdb-server's C(error)), V(stalled)
          (running but not carrying its changes, see O(stall_window)), V(running) (also
          C(triggered)) for 10 s or more with no error, V(settling) (running, not that long
          yet), V(completed), or V(waiting) (no state yet, or C(pending)/C(initializing)
          without an error).
      type: str
      sample: running
    wanted:
      description: Whether the replication is one of RV(wanted).
      returned: when O(pull_databases) is given
      type: bool
      sample: true
    needs_restart:
      description:
        - Whether a new job (the document deleted and written again) would help, see
          RV(restart); true for V(failed) and V(stalled) ones, on either flavour.
      type: bool
      sample: false
pulls:
  description: The pulls this server should have, database by database.
  returned: when O(pull_databases) is given
  type: list
  elements: dict
  sample: [{id: kuno-messages-from-node2, database: messages, peer: node2}]
wanted:
  description: The ids of RV(pulls).
  returned: when O(pull_databases) is given
  type: list
  elements: str
  sample: [kuno-messages-from-node2]
missing:
  description: The ids of RV(wanted) without a replication document.
  returned: when O(pull_databases) is given
  type: list
  elements: str
  sample: []
unwanted:
  description: Ids with O(id_prefix) that are not in RV(wanted) (a node left), sorted.
  returned: when O(pull_databases) is given
  type: list
  elements: str
  sample: [kuno-messages-from-node4]
restart:
  description:
    - The ids of the replications that need a restart (RV(replications[].needs_restart)),
      sorted; with O(pull_databases), the wanted ones only.
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
    CouchDBClient,
    CouchDBError,
    CouchDBModule,
    couchdb_argument_spec,
    run_module,
    strip_userinfo,
)
from ansible.module_utils.couchdb_replication import (
    CouchDBReplicator,
    PouchDBReplicator,
    read_replications,
    replicator_for,
)
from ansible.module_utils.replications import (
    FAILED,
    ID_PREFIX,
    RUNNING_STATES,
    STALLED,
    classify,
    pull_ids,
    replication_id,
)

# A look at a replication for the stall test, by flavour (tests/modules/test_stall.py).
scheduler_sample = CouchDBReplicator.sample
replicator_doc_sample = PouchDBReplicator.sample

# --- pure functions: what a look at a replication shows --------------------------------


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


def needs_restart(condition_):
    """Whether a replication in this condition wants a new job."""
    return condition_ in (FAILED, STALLED)


def condition(replication):
    """The replication's condition (replications.classify), stalled included (see RETURN)."""
    return classify(
        replication.get("state"),
        replication.get("reason"),
        replication.get("running_for"),
        stalled=replication.get("stalled"),
    )


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
        p = self.params
        self.replicator = replicator_for(self.client, p["replicator_db"])
        replications = read_replications(self.replicator)
        for replication in replications:
            replication.update(stalled=None, missing_changes=None, stall_error=None)
        if p["stall_window"] > 0:
            self.look_for_stalls(replications)
        wanted = None if p["pull_databases"] is None else pull_ids(p["pull_databases"], p["pull_peers"], p["id_prefix"])
        for replication in replications:
            replication["condition"] = condition(replication)
            replication["needs_restart"] = needs_restart(replication["condition"])
            if wanted is not None:
                replication["wanted"] = replication["id"] in wanted
        result = dict(
            changed=False,
            flavour=self.replicator.name,
            replications=replications,
            restart=sorted(
                r["id"] for r in replications if r["needs_restart"] and r["id"] and r.get("wanted", True)
            ),
        )
        if wanted is not None:
            present = {r["id"] for r in replications}
            result["pulls"] = [
                dict(id=replication_id(database, peer, p["id_prefix"]), database=database, peer=peer)
                for database in p["pull_databases"]
                for peer in p["pull_peers"]
            ]
            result["wanted"] = wanted
            result["missing"] = [doc_id for doc_id in wanted if doc_id not in present]
            result["unwanted"] = sorted(
                r["id"] for r in replications if r["id"].startswith(p["id_prefix"]) and not r["wanted"]
            )
        return result

    # --- stalls ------------------------------------------------------------------------------

    def samples(self):
        """{doc id: {state, job, marks}} of every replication, as the server shows it now."""
        return {doc_id: self.replicator.sample(report) for doc_id, report in self.replicator.reports()}

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
        pull_databases=dict(type="list", elements="str"),
        pull_peers=dict(type="list", elements="str", default=[]),
        id_prefix=dict(type="str", default=ID_PREFIX),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, ReplicationInfo)


if __name__ == "__main__":
    main()
