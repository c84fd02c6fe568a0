#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: couchdb_replication
short_description: Manage one CouchDB replication as a _replicator document with a fixed id
description:
  - Makes sure the C(_replicator) document O(id) describes a replication from O(source) to
    O(target), or does not exist.
  - The document is written with C(PUT) to its fixed id and updated by read, compare, write
    with its C(_rev); never C(POST)ed, because CouchDB 3 marks duplicate replication documents
    C(failed).
  - Credentials go where the server reads them. Apache CouchDB 3.2 and later get them in the
    endpoint's C(auth) object; pouchdb-server and older CouchDB only read them from the URL.
    The flavour comes from the server's C(GET /).
  - "CouchDB hides credentials when a replication document is read back, so the document also
    carries C(ansible_credentials_digest), a salted PBKDF2 digest of the user names and
    passwords: a rerun with the same credentials reports no change, a new password updates the
    document."
  - O(wait) polls until the replication has stayed running for O(settle_time) with no error
    (CouchDB 3 C(/_scheduler/docs); pouchdb-server C(_replication_state)) and fails with the
    server's reason when it is C(crashing), C(failed) or C(error), or has an error in its job
    info. A single C(running) proves nothing on CouchDB 3, which shows a pull whose source
    refuses its credentials as C(running) for seconds before it crashes.
author:
  - kuno authors
attributes:
  check_mode:
    support: full
    description: Reports what would change and writes nothing; O(wait) is skipped.
  diff_mode:
    support: full
    description: Shows the replication before and after, credentials redacted.
extends_documentation_fragment:
  - kuno_couchdb
  - kuno_couchdb_replication
options:
  user:
    description: User name for HTTP basic authentication to O(url).
  source:
    description:
      - Full URL of the source database without credentials, for example
        V(http://couchdb-2:5984/messages). CouchDB 3 has no local endpoints.
      - Required when O(state=present).
    type: str
  target:
    description:
      - Full URL of the target database without credentials.
      - Required when O(state=present).
    type: str
  source_user:
    description: User name the replication uses at the source.
    type: str
  source_password:
    description: Password of O(source_user). Never logged or returned.
    type: str
  target_user:
    description: User name the replication uses at the target.
    type: str
  target_password:
    description: Password of O(target_user). Never logged or returned.
    type: str
  continuous:
    description: Keep replicating new changes.
    type: bool
    default: true
  create_target:
    description: Let the replication create the target database.
    type: bool
    default: false
  selector:
    description:
      - A Mango selector; only matching documents are replicated.
      - Refused with pouchdb-server, on this server or as the source (when the managed host can
        ask it), because its process exits when a replication asks its changes feed for a selector.
    type: dict
  state:
    description: Whether the replication document should exist.
    type: str
    choices: [present, absent]
    default: present
  restart:
    description:
      - Restart the replication even when its document is as wanted, for example after a long
        partition when CouchDB's back-off for a crashing job has grown to hours. Always reports
        a change on CouchDB.
      - On CouchDB the document is deleted and written again, which starts a new job.
      - On pouchdb-server a replication in state C(error) or C(completed) is started again by
        rewriting its document. A running (C(triggered)) one is left alone with a warning;
        pouchdb-server retries on its own with a back-off of at most 10 minutes, and it cannot
        stop a running replication without its process exiting (see the notes).
    type: bool
    default: false
  wait:
    description:
      - After the write, poll until the replication has stayed running for O(settle_time) with
        no error in its job info (or completed, when not continuous). Timed on the server's
        clock (its C(Date) header against the job's C(last_updated), pouchdb-server's
        C(_replication_state_time)), so a replication that has run for long counts at once; after
        this task's own write only a job started since counts.
      - Fails with the server's reason on C(crashing), C(failed), C(error) or an error in the job
        info (CouchDB's C(pending) after a crash), for example bad credentials, which CouchDB 3
        reports as C(crashing) with C(replication_auth_error).
      - pouchdb-server says C(triggered) as soon as it starts a replication, also one it then
        retries in vain (an endpoint it cannot reach), so there C(triggered) is all O(wait) can
        check.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds O(wait) waits, and the longest a removal waits for a one-off replication to
        finish. Must be longer than O(settle_time).
    type: float
    default: 60
  pouchdb_tolerates_rejections:
    description:
      - pouchdb-server only. Say that the server runs under C(node --unhandled-rejections=warn),
        so that an unhandled promise rejection is logged instead of ending its process.
      - Then the module deletes the document of a running replication to remove it, change it
        (deleted and written again) or restart it, and writes a replication whose endpoint
        refuses its credentials (the server marks it C(error), and O(wait) fails with its reason).
      - Any other pouchdb-server process exits on either.
    type: bool
    default: false
notes:
  - "pouchdb-server 4.2 cannot stop a running continuous replication safely: it refuses any
    edit of a C(triggered) document (HTTP 403, 'Only the replicator can edit replication
    documents that are in the triggered state'), and when the document is deleted, its
    replicator cancels the job, then reads the deleted document to record the state, and the
    rejected read kills the node process (an unhandled promise rejection). A replication that
    fails authentication kills the process the same way, and again at every start. So on
    pouchdb-server this module refuses to update or remove a running continuous replication
    (the task fails, nothing is written and the server keeps running), removes it once it is
    C(error) or C(completed), and checks the endpoints' credentials before it writes a document.
    Measured with pouchdb-server 4.2.0 on node 20."
  - Run pouchdb-server under C(node --unhandled-rejections=warn) to make deletion of a running
    replication and authentication failures survivable, and set O(pouchdb_tolerates_rejections).
  - O(restart) and O(wait) run the same code as M(couchdb_replication_job), which restarts and
    waits for the job of an existing document without its options.
seealso:
  - module: couchdb_replication_job
  - module: couchdb_replication_info
"""

EXAMPLES = r"""
- name: Pull messages from couchdb-2 into this node, and wait until it runs
  couchdb_replication:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    id: messages-from-couchdb-2
    source: http://couchdb-2:5984/messages
    source_user: replicator
    source_password: "{{ couchdb_replicator_password }}"
    target: http://couchdb-1:5984/messages
    target_user: replicator
    target_password: "{{ couchdb_replicator_password }}"
    wait: true

- name: Restart it after a long partition
  couchdb_replication:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    id: messages-from-couchdb-2
    source: http://couchdb-2:5984/messages
    target: http://couchdb-1:5984/messages
    restart: true

- name: Stop replicating from a node that left
  couchdb_replication:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    id: messages-from-couchdb-4
    state: absent
"""

RETURN = r"""
replication:
  description: The replication as the task leaves it (would leave it, in check mode); null when absent. No credential.
  returned: always
  type: dict
  contains:
    id:
      description: The document id.
      type: str
      sample: messages-from-couchdb-2
    source:
      description: The source URL and where its credentials are (V(auth), V(url), V(headers) or null).
      type: dict
      sample: {url: "http://couchdb-2:5984/messages", credentials: auth}
    target:
      description: The target URL and where its credentials are.
      type: dict
      sample: {url: "http://couchdb-1:5984/messages", credentials: auth}
    continuous:
      description: Whether the replication is continuous.
      type: bool
      sample: true
    create_target:
      description: Whether the replication may create the target.
      type: bool
      sample: false
    selector:
      description: The selector, null when there is none.
      type: dict
      sample: null
    credentials:
      description: V(********) when the document carries credentials, null when not.
      type: str
      sample: "********"
operation:
  description: What the task did to the document (or would do in check mode).
  returned: changed
  type: str
  sample: update
differences:
  description: Names of the values an update changed; V(credentials) when only a password did.
  returned: when an existing document was updated
  type: list
  elements: str
  sample: [selector]
restarted:
  description: Whether the replication was (or in check mode would be) restarted.
  returned: when O(restart=true)
  type: bool
  sample: true
flavour:
  description: The server's flavour, V(couchdb) or V(pouchdb-server).
  returned: always
  type: str
  sample: couchdb
status:
  description:
    - The replication's state, the server's reason and the seconds it has been running (null
      when it is not), as read at the end of the task.
  returned: when O(wait=true) and not in check mode
  type: dict
  sample: {state: running, reason: null, running_for: 10.4}
diff:
  description: The replication before and after, when Ansible runs with C(--diff).
  returned: when diff mode is on
  type: dict
  contains:
    before:
      description: The replication before the task; empty when there was none.
      type: dict
    after:
      description: The replication after the task; empty when it is removed.
      type: dict
"""

import binascii
import hashlib
import hmac
import json
import os
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.couchdb import (
    REDACTED,
    CouchDBModule,
    check_plain_url,
    run_module,
    strip_userinfo,
    with_userinfo,
)
from ansible.module_utils.couchdb_replication import (
    AUTH_OBJECT_SINCE,  # noqa: F401 - read by the tests as this module's
    DIGEST_FIELD,
    ReplicationJob,
    credential_location,
    endpoint_client,
    replication_argument_spec,
    replicator_for,
)

DIGEST_ITERATIONS = 100000
# Top-level fields the server manages: _id, _rev, _replication_* (both flavours) and owner (CouchDB).
SERVER_FIELDS = ("owner",)


# --- credentials digest -----------------------------------------------------------


def credentials_digest(credentials, salt=None, iterations=DIGEST_ITERATIONS):
    """A salted PBKDF2 digest of user names and passwords, or None without credentials."""
    if not any(credentials):
        return None
    if salt is None:
        salt = binascii.hexlify(os.urandom(16)).decode()
    secret = json.dumps(list(credentials)).encode("utf-8")
    digest = hashlib.pbkdf2_hmac("sha256", secret, salt.encode(), iterations)
    return "pbkdf2_sha256$%d$%s$%s" % (iterations, salt, binascii.hexlify(digest).decode())


def parse_digest(value):
    """(salt, iterations) of a stored digest, or None if it is not one of ours."""
    try:
        scheme, iterations, salt, _digest = value.split("$")
        if scheme == "pbkdf2_sha256":
            return salt, int(iterations)
    except (AttributeError, ValueError):
        pass
    return None


def same_digest(stored, credentials):
    """Whether credentials produce the stored digest (compared in constant time)."""
    parsed = parse_digest(stored)
    if parsed is None:
        return False
    return hmac.compare_digest(stored, credentials_digest(credentials, *parsed) or "")


# --- endpoints ----------------------------------------------------------------------


def normalise_endpoint(endpoint):
    url = endpoint.get("url") if isinstance(endpoint, dict) else endpoint
    return {"url": strip_userinfo(url), "credentials": credential_location(endpoint)}


def endpoint_body(url, user, password, location):
    """The endpoint as the document carries it, credentials where the server reads them."""
    if location == "auth":
        return {"url": url, "auth": {"basic": {"username": user, "password": password or ""}}}
    if location == "url":
        return with_userinfo(url, user, password)
    return url


def normalise_doc(doc):
    """The comparable form of a replication document: server fields and credentials left out."""
    result = {
        "id": doc.get("_id"),
        "source": normalise_endpoint(doc.get("source")),
        "target": normalise_endpoint(doc.get("target")),
        "continuous": bool(doc.get("continuous", False)),
        "create_target": bool(doc.get("create_target", False)),
        "selector": doc.get("selector") or None,
        "credentials": doc.get(DIGEST_FIELD),
    }
    # Anything else someone put in the document (filter, doc_ids, ...) is a difference:
    # the module owns the whole document.
    handled = ("source", "target", "continuous", "create_target", "selector", DIGEST_FIELD)
    for key, value in doc.items():
        if key.startswith("_") or key in SERVER_FIELDS or key in handled:
            continue
        result["extra." + key] = value
    return result


def replication_needs_update(before, after):
    """Whether the document differs from the wanted one.

    CouchDB strips credentials from a replication document for a reader who is neither an
    admin nor its owner: where an endpoint shows none but the stored digest matches the wanted
    credentials, they are there.
    """
    before = dict(before)
    if before.get("credentials") and before["credentials"] == after.get("credentials"):
        for name in ("source", "target"):
            if before[name]["credentials"] is None and after[name]["credentials"] is not None:
                before[name] = dict(before[name], credentials=after[name]["credentials"])
    return before != after


class Replication(CouchDBModule):
    """The _replicator document: read, compare, write; the flavour's rails in self.replicator,
    restart and wait in ReplicationJob."""

    result_key = "replication"

    def __init__(self, module):
        super().__init__(module)
        p = self.params
        for name in ("source", "target"):
            if p[name]:
                reason = check_plain_url(p[name])
                if reason:
                    raise ValueError("The %s option %s." % (name, reason))
        # Ansible masks no_log values verbatim; the URL form of a password is percent-encoded.
        for name in ("source_password", "target_password"):
            if p[name]:
                module.no_log_values.add(quote(p[name], safe=""))
        if p["wait"] and p["settle_time"] >= p["wait_timeout"]:
            raise ValueError("settle_time must be shorter than wait_timeout.")
        self.replicator = replicator_for(self.client, p["replicator_db"], p["pouchdb_tolerates_rejections"])
        self.job = ReplicationJob(self.replicator, p["id"])
        self.current_doc = None
        # The server's time of this task's write of the document (its Date header), if any.
        self.written_at = None

    def credentials(self):
        p = self.params
        return (p["source_user"], p["source_password"], p["target_user"], p["target_password"])

    # --- read, normalise, compare ------------------------------------------------------

    def read(self):
        self.current_doc = self.client.get_or_none(self.replicator.doc_path(self.params["id"]))
        return self.current_doc

    def normalise(self, current):
        return normalise_doc(current)

    def desired(self, current):
        p = self.params
        stored = (current or {}).get(DIGEST_FIELD)
        digest = stored if same_digest(stored, self.credentials()) else credentials_digest(self.credentials())
        location = self.replicator.credential_location
        return {
            "id": p["id"],
            "source": {"url": p["source"], "credentials": location if p["source_user"] else None},
            "target": {"url": p["target"], "credentials": location if p["target_user"] else None},
            "continuous": p["continuous"],
            "create_target": p["create_target"],
            "selector": p["selector"] or None,
            "credentials": digest,
        }

    def needs_update(self, before, after):
        return replication_needs_update(before, after)

    def public(self, normalised):
        if normalised is None:
            return None
        return dict(normalised, credentials=REDACTED if normalised.get("credentials") else None)

    def body(self, desired):
        p = self.params
        doc = {
            name: endpoint_body(p[name], p[name + "_user"], p[name + "_password"], desired[name]["credentials"])
            for name in ("source", "target")
        }
        doc.update(continuous=p["continuous"], create_target=p["create_target"])
        if p["selector"]:
            doc["selector"] = p["selector"]
        if desired["credentials"]:
            doc[DIGEST_FIELD] = desired["credentials"]
        return doc

    # --- act -------------------------------------------------------------------------

    def preflight(self, operation, current):
        p = self.params
        if operation == "delete":
            if not self.module.check_mode:
                current = self.current_doc = self.replicator.before_delete(p["id"], current, p["wait_timeout"])
            self.replicator.refuse_edit(current, p["id"], "remove")
            return
        if operation == "update":
            self.replicator.refuse_edit(current, p["id"], "update")
        self.replicator.refuse_selector(
            p["selector"],
            p["source"],
            lambda root: endpoint_client(root, p["source_user"], p["source_password"], p),
        )
        self.replicator.check_credentials(
            (name, endpoint_client(p[name], p[name + "_user"], p[name + "_password"], p))
            for name in ("source", "target")
        )

    def create(self, desired):
        self.written_at = self.replicator.write(self.params["id"], self.body(desired))

    def update(self, current, desired):
        self.written_at = self.replicator.write(self.params["id"], self.body(desired), current)

    def delete(self, current):
        self.client.delete(self.replicator.doc_path(self.params["id"]), query={"rev": self.current_doc["_rev"]})

    def after_act(self, operation, result):
        p = self.params
        result["flavour"] = self.replicator.name
        if p["state"] != "present":
            return
        if p["restart"]:
            result["restarted"] = self.restart(operation)
            if result["restarted"]:
                result["changed"] = True
        if p["wait"] and not self.module.check_mode:
            result["status"] = self.job.wait(p["continuous"], p["settle_time"], p["wait_timeout"], self.written_at)

    def restart(self, operation):
        if operation == "create":
            return True  # a new document starts a new job
        doc = self.current_doc if self.module.check_mode else self.client.get(self.replicator.doc_path(self.params["id"]))
        refusal = self.replicator.restart_refusal(doc)
        if refusal:
            self.module.warn("Replication %r: %s: not restarted." % (self.params["id"], refusal))
            return False
        if not self.module.check_mode:
            self.written_at = self.job.restart(self.body(self.desired(doc)), doc)
        return True


def argument_spec():
    """The connection options and this module's own."""
    spec = replication_argument_spec()
    spec.update(
        source=dict(type="str"),
        target=dict(type="str"),
        source_user=dict(type="str"),
        source_password=dict(type="str", no_log=True),
        target_user=dict(type="str"),
        target_password=dict(type="str", no_log=True),
        continuous=dict(type="bool", default=True),
        create_target=dict(type="bool", default=False),
        selector=dict(type="dict"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        restart=dict(type="bool", default=False),
        wait=dict(type="bool", default=False),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("state", "present", ("source", "target"))],
        required_by=dict(source_password=("source_user",), target_password=("target_user",)),
    )
    run_module(module, Replication)


if __name__ == "__main__":
    main()
