#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: couchdb_database
short_description: Create or delete a CouchDB database and set its security object
description:
  - Makes sure a database exists or does not exist on one CouchDB server (Apache CouchDB 3.x
    or pouchdb-server).
  - The database's C(_security) object is set to exactly O(security); lists of names and roles
    compare regardless of order. The default is admin-only on either flavour - CouchDB 3's own
    default for a new database; pouchdb-server would leave it open to anyone.
  - Talks to CouchDB's HTTP API with Ansible's own URL helpers; nothing to install on the managed host.
author:
  - kuno authors
attributes:
  check_mode:
    support: full
    description: Reports what would change and writes nothing.
  diff_mode:
    support: full
    description: Shows the database and its security object before and after.
extends_documentation_fragment:
  - kuno_couchdb
options:
  user:
    description: User name for HTTP basic authentication (a server admin to create databases).
  name:
    description: Name of the database.
    type: str
    required: true
  state:
    description: Whether the database should exist. V(absent) deletes it with every document.
    type: str
    choices: [present, absent]
    default: present
  security:
    description:
      - The database's security object (C(GET/PUT /{db}/_security)), read, compared and written
        only when it differs.
      - "The default, V({admins: {roles: [_admin]}, members: {roles: [_admin]}}), is admin-only:
        only server admins read or write documents. It is the security object CouchDB 3 gives a
        new database (C([couchdb] default_security = admin_only)); pouchdb-server gives none,
        so its databases are open to anyone until it is set (and stay open while the server has
        no admin at all: its admin party)."
      - Empty C(members) lists make the database public, on CouchDB 3 too ("Having no members,
        any user can write regular documents (any non-design document) and read documents
        from the database", CouchDB's C(/{db}/_security) reference).
    type: dict
    default: {admins: {names: [], roles: [_admin]}, members: {names: [], roles: [_admin]}}
    suboptions:
      admins:
        description: Who may change design documents and the security object.
        type: dict
        suboptions:
          names:
            description: User names.
            type: list
            elements: str
            default: []
          roles:
            description: Roles.
            type: list
            elements: str
            default: []
      members:
        description: Who may read and write documents.
        type: dict
        suboptions:
          names:
            description: User names.
            type: list
            elements: str
            default: []
          roles:
            description: Roles.
            type: list
            elements: str
            default: []
notes:
  - Deleting a database that does not exist, or creating one that exists, reports no change.
  - Give O(user) and O(password) of a server admin. Once a server has admins (CouchDB 3 always,
    pouchdb-server when its configuration names any) only they create, delete and secure
    databases, and only they read an admin-only one.
seealso:
  - name: CouchDB database API
    description: Creating, deleting and securing databases.
    link: https://docs.couchdb.org/en/stable/api/database/common.html
"""

EXAMPLES = r"""
- name: The users database, admin-only (the default security object)
  couchdb_database:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    name: users

- name: The messages database, readable and writable by the kuno role only
  couchdb_database:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    name: messages
    security:
      admins: {names: [], roles: []}
      members: {names: [], roles: [kuno]}

- name: No scratch database
  couchdb_database:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    name: scratch
    state: absent
"""

RETURN = r"""
database:
  description: The database as the task leaves it (as it would leave it in check mode); null when absent.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the database.
      type: str
      sample: messages
    security:
      description: The security object, names and roles sorted.
      type: dict
      sample: {admins: {names: [], roles: [_admin]}, members: {names: [], roles: [_admin]}}
operation:
  description: What the task did (or would do in check mode).
  returned: changed
  type: str
  sample: create
differences:
  description: Dotted names of the values an update changed.
  returned: when O(state=present) updated an existing database
  type: list
  elements: str
  sample: [security.members.roles]
diff:
  description: The database before and after, when Ansible runs with C(--diff).
  returned: when diff mode is on
  type: dict
  contains:
    before:
      description: The database before the task; empty when it did not exist.
      type: dict
    after:
      description: The database after the task; empty when it is deleted.
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.couchdb import (
    CouchDBModule,
    PreconditionFailed,
    couchdb_argument_spec,
    quote_segment,
    run_module,
)

_NAMES_AND_ROLES = dict(
    names=dict(type="list", elements="str", default=[]),
    roles=dict(type="list", elements="str", default=[]),
)
# CouchDB 3's security object of a new database ([couchdb] default_security = admin_only):
# members and admins are those with the _admin role, i.e. the server admins.
ADMIN_ONLY = {
    "admins": {"names": [], "roles": ["_admin"]},
    "members": {"names": [], "roles": ["_admin"]},
}


def normalise_security(security):
    """admins and members, each with sorted names and roles; what CouchDB leaves out is empty."""
    security = security or {}
    result = {}
    for section in ("admins", "members"):
        part = security.get(section) or {}
        result[section] = {key: sorted(part.get(key) or []) for key in ("names", "roles")}
    return result


class Database(CouchDBModule):
    result_key = "database"

    @property
    def path(self):
        return "/" + quote_segment(self.params["name"])

    def read(self):
        if self.client.get_or_none(self.path) is None:
            return None
        return {
            "name": self.params["name"],
            "security": self.client.get(self.path + "/_security"),
        }

    def normalise(self, current):
        return {"name": current["name"], "security": normalise_security(current["security"])}

    def desired(self, current):
        security = normalise_security(self.params["security"])
        return {"name": self.params["name"], "security": security}

    def create(self, desired):
        try:
            self.client.put(self.path)
        except PreconditionFailed:
            pass  # made meanwhile by someone else: what we wanted
        # Always: pouchdb-server leaves a new database open, and CouchDB 3 may be configured so.
        self.client.put(self.path + "/_security", desired["security"])

    def update(self, current, desired):
        self.client.put(self.path + "/_security", desired["security"])

    def delete(self, current):
        self.client.delete(self.path)


def argument_spec():
    """The connection options and this module's own."""
    spec = couchdb_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        security=dict(
            type="dict",
            default=ADMIN_ONLY,
            options=dict(
                admins=dict(type="dict", options=_NAMES_AND_ROLES),
                members=dict(type="dict", options=_NAMES_AND_ROLES),
            ),
        ),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, Database)


if __name__ == "__main__":
    main()
