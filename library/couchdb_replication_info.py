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
flavour:
  description: The server's flavour, V(couchdb) or V(pouchdb-server).
  returned: always
  type: str
  sample: couchdb
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.couchdb import (
    CouchDBModule,
    couchdb_argument_spec,
    read_replications,
    run_module,
)


class ReplicationInfo(CouchDBModule):
    def execute(self):
        return dict(
            changed=False,
            flavour=self.client.flavour,
            replications=read_replications(self.client, self.params["replicator_db"]),
        )


def argument_spec():
    """The connection options and this module's own."""
    spec = couchdb_argument_spec()
    spec.update(replicator_db=dict(type="str", default="_replicator"))
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, ReplicationInfo)


if __name__ == "__main__":
    main()
