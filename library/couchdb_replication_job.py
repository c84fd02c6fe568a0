#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: couchdb_replication_job
short_description: Restart a CouchDB replication's job and wait until it runs
description:
  - Works on the job of the existing C(_replicator) document O(id), not on the document
    (M(couchdb_replication) writes that).
  - O(state=running) restarts the job only when it has failed (CouchDB 3's C(crashing),
    C(failed), C(error), or another state with an error; pouchdb-server's C(error)), as
    C(kuno.common.replications) classifies it. O(state=restarted) always restarts it, for
    example one that C(couchdb_replication_info) found stalled.
  - A restart is a new job. On CouchDB 3 the document is deleted and written again as it
    was, which also drops the back-off CouchDB built up for a crashing job (up to hours). On
    pouchdb-server a replication in state C(error) or C(completed) is written again without
    its C(_replication_*) fields; a running (C(triggered)) one is left alone with a warning
    unless O(pouchdb_tolerates_rejections), because its process exits when the document of a
    running replication is deleted.
  - The document is rewritten as the server stores it, credentials included; the task's
    O(user) must be a server admin or the document's owner, who read it in full. A document
    read back without its credentials is not rewritten (the task fails, nothing is written).
  - O(wait) then polls until the job has stayed running for O(settle_time) with no error
    (or, a one-off replication, completed), and fails with the server's reason when it fails.
author:
  - kuno authors
attributes:
  check_mode:
    support: full
    description: Reports whether the job would be restarted and writes nothing; O(wait) is skipped.
  diff_mode:
    support: full
    description: Shows the job's state before and after (V(new job) when restarted).
extends_documentation_fragment:
  - kuno_couchdb
  - kuno_couchdb_replication
options:
  state:
    description:
      - V(running) restarts the job when it has failed, V(restarted) always.
    type: str
    choices: [running, restarted]
    default: running
  wait:
    description:
      - Poll until the replication has stayed running for O(settle_time) with no error (or
        completed, when it is not continuous), on the server's clock; after a restart, only
        a job started since counts. Fails with the server's reason when it fails.
    type: bool
    default: true
  wait_timeout:
    description: Seconds O(wait) waits. Must be longer than O(settle_time).
    type: float
    default: 60
  pouchdb_tolerates_rejections:
    description:
      - pouchdb-server only. Say that the server runs under C(node --unhandled-rejections=warn),
        so that the document of a running replication may be deleted and written again.
    type: bool
    default: false
seealso:
  - module: couchdb_replication
  - module: couchdb_replication_info
"""

EXAMPLES = r"""
# __couchdb_replications: a registered result of couchdb_replication_info (stall_window: 5)
- name: Restart the replications that fail or stall, as new jobs
  couchdb_replication_job:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    id: "{{ item }}"
    state: restarted
    wait: false
  loop: "{{ __couchdb_replications.restart }}"

- name: Make sure the pull from couchdb-2 runs, restarting it if it failed
  couchdb_replication_job:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    id: kuno-messages-from-couchdb-2
    settle_time: 15
"""

RETURN = r"""
id:
  description: The document id.
  returned: always
  type: str
  sample: kuno-messages-from-couchdb-2
restarted:
  description: Whether the job was (in check mode, would be) restarted.
  returned: always
  type: bool
  sample: true
condition:
  description:
    - The replication's condition before the task (C(kuno.common.replications)),
      V(running), V(settling), V(completed), V(failed) or V(waiting).
  returned: always
  type: str
  sample: failed
flavour:
  description: V(couchdb) (Apache CouchDB) or V(pouchdb-server), from the server's C(GET /).
  returned: always
  type: str
  sample: pouchdb-server
status:
  description:
    - At the end of the wait, what the server reports of the job (C(state), C(reason)) and
      C(running_for), the seconds since it began running (null when it does not run).
  returned: unless O(wait=false) or in check mode
  type: dict
  sample: {state: running, reason: null, running_for: 12.0}
diff:
  description: With C(--diff), the job's state and condition before, and after.
  returned: in diff mode
  type: dict
  contains:
    before:
      description: The state and condition before the task.
      type: dict
    after:
      description: The same, or V(new job) when restarted.
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.couchdb import CouchDBModule, run_module
from ansible.module_utils.couchdb_replication import (
    DIGEST_FIELD,
    ReplicationError,
    ReplicationJob,
    credential_location,
    replication_argument_spec,
    replicator_for,
)
from ansible.module_utils.replications import FAILED

STATE_RUNNING = "running"
STATE_RESTARTED = "restarted"


def rewritable_body(doc):
    """The document as it is written again: without the server's fields (_id, _rev,
    pouchdb-server's _replication_*). Raises ReplicationError when the server showed it
    without the credentials couchdb_replication wrote (a reader who is not an admin)."""
    if doc.get(DIGEST_FIELD) and not any(credential_location(doc.get(name)) for name in ("source", "target")):
        raise ReplicationError(
            "Replication %r not restarted: the server shows its document without credentials "
            "(connect as a server admin or its owner). Nothing was written." % doc.get("_id")
        )
    return {key: value for key, value in doc.items() if not key.startswith("_")}


class ReplicationJobModule(CouchDBModule):
    def __init__(self, module):
        super().__init__(module)
        p = self.params
        if p["wait"] and p["settle_time"] >= p["wait_timeout"]:
            raise ValueError("settle_time must be shorter than wait_timeout.")
        self.replicator = replicator_for(self.client, p["replicator_db"], p["pouchdb_tolerates_rejections"])
        self.job = ReplicationJob(self.replicator, p["id"])

    def execute(self):
        p = self.params
        doc = self.client.get_or_none(self.replicator.doc_path(p["id"]))
        if doc is None:
            raise ReplicationError("There is no replication document %r to run." % p["id"])
        before = self.job.status(p["settle_time"])
        restart = p["state"] == STATE_RESTARTED or before["verdict"] == FAILED
        restarted = False
        written_at = None
        if restart:
            refusal = self.replicator.restart_refusal(doc)
            if refusal:
                self.module.warn("Replication %r: %s: not restarted." % (p["id"], refusal))
            else:
                body = rewritable_body(doc)
                if not self.module.check_mode:
                    written_at = self.job.restart(body, doc)
                restarted = True
        result = dict(
            changed=restarted,
            id=p["id"],
            restarted=restarted,
            condition=before["verdict"],
            flavour=self.replicator.name,
        )
        if self.module._diff:
            shown = dict(state=before["state"], condition=before["verdict"])
            result["diff"] = dict(before=shown, after=dict(state="new job") if restarted else shown)
        if p["wait"] and not self.module.check_mode:
            result["status"] = self.job.wait(
                bool(doc.get("continuous")), p["settle_time"], p["wait_timeout"], written_at
            )
        return result


def argument_spec():
    """The connection and replication options and this module's own."""
    return dict(
        replication_argument_spec(),
        state=dict(type="str", default=STATE_RUNNING, choices=[STATE_RUNNING, STATE_RESTARTED]),
        wait=dict(type="bool", default=True),
    )


def main():
    run_module(AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True), ReplicationJobModule)


if __name__ == "__main__":
    main()
