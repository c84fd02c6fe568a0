#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: couchdb_index
short_description: Create or delete a CouchDB Mango (JSON) index
description:
  - Makes sure a Mango index of a database, named by its design document and its name, exists
    with the given fields and partial filter, or does not exist.
  - An index that already exists with the same fields and partial filter is not changed. One
    that exists with other fields or another partial filter is deleted and created again,
    because C(POST /{db}/_index) leaves an existing index of that name as it is.
  - Works with Apache CouchDB 3.x and pouchdb-server.
author:
  - kuno authors
attributes:
  check_mode:
    support: full
    description: Reports what would change and writes nothing.
  diff_mode:
    support: full
    description: Shows the index definition before and after.
extends_documentation_fragment:
  - kuno_couchdb
options:
  database:
    description: The database that holds the index. It must exist.
    type: str
    required: true
  ddoc:
    description: The design document of the index, with or without its V(_design/) prefix.
    type: str
    required: true
  name:
    description: Name of the index within its design document.
    type: str
    required: true
  fields:
    description:
      - Names of the indexed fields, in order, all ascending.
      - Required when O(state=present).
    type: list
    elements: str
  partial_filter_selector:
    description:
      - A Mango selector; only documents that match it are indexed.
      - "Compared with the index's in CouchDB's normal form (C(mango_selector:normalize)), in
        which CouchDB 3 stores and lists it; pouchdb-server lists it as written. So
        V({type: message}) equals CouchDB's V({type: {$eq: message}}), nested fields equal
        their dotted path, several keys equal their C($and), and C($not) equals the negated
        comparison; the order of keys and of C($and)/C($or) arguments does not matter."
    type: dict
  state:
    description: Whether the index should exist.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - name: CouchDB Mango index API
    description: POST, GET and DELETE of /{db}/_index.
    link: https://docs.couchdb.org/en/stable/api/database/find.html#db-index
"""

EXAMPLES = r"""
- name: Messages of a recipient in time order
  couchdb_index:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    database: messages
    ddoc: kuno
    name: recipient-timestamp-index
    fields: [recipientId, timestamp]
    partial_filter_selector:
      type: message

- name: No index on senders
  couchdb_index:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    database: messages
    ddoc: kuno
    name: sender-index
    state: absent
"""

RETURN = r"""
index:
  description: The index as the task leaves it (would leave it, in check mode); null when absent.
  returned: always
  type: dict
  contains:
    database:
      description: The database.
      type: str
      sample: messages
    ddoc:
      description: The design document, with its V(_design/) prefix.
      type: str
      sample: _design/kuno
    name:
      description: The index name.
      type: str
      sample: recipient-timestamp-index
    fields:
      description: The indexed fields in order; a descending field shows as a one-key dict.
      type: list
      elements: raw
      sample: [recipientId, timestamp]
    partial_filter_selector:
      description: The partial filter in CouchDB's normal form, null when there is none.
      type: dict
      sample: {type: {$eq: message}}
operation:
  description: What the task did (or would do in check mode).
  returned: changed
  type: str
  sample: create
differences:
  description: Names of the values an update changed.
  returned: when O(state=present) replaced an existing index
  type: list
  elements: str
  sample: [fields]
diff:
  description: The index before and after, when Ansible runs with C(--diff).
  returned: when diff mode is on
  type: dict
  contains:
    before:
      description: The index before the task; empty when it did not exist.
      type: dict
    after:
      description: The index after the task; empty when it is deleted.
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.couchdb import (
    CouchDBModule,
    comparable_selector,
    couchdb_argument_spec,
    quote_segment,
    run_module,
)

DESIGN_PREFIX = "_design/"


def design_id(ddoc):
    return ddoc if ddoc.startswith(DESIGN_PREFIX) else DESIGN_PREFIX + ddoc


def normalise_fields(fields):
    """["a", "b"] for [{"a": "asc"}, {"b": "asc"}]; a descending field stays {"name": "desc"}."""
    result = []
    for field in fields or []:
        if isinstance(field, dict) and len(field) == 1:
            name, direction = next(iter(field.items()))
            result.append(name if direction == "asc" else {name: direction})
        else:
            result.append(field)
    return result


def find_index(indexes, ddoc, name):
    for index in indexes or []:
        if index.get("ddoc") == ddoc and index.get("name") == name and index.get("type") == "json":
            return index
    return None


class Index(CouchDBModule):
    result_key = "index"

    @property
    def db_path(self):
        return "/" + quote_segment(self.params["database"])

    @property
    def ddoc(self):
        return design_id(self.params["ddoc"])

    def read(self):
        # No database (yet: check mode after a predicted create) has no index.
        listing = self.client.get_or_none(self.db_path + "/_index")
        return find_index((listing or {}).get("indexes"), self.ddoc, self.params["name"])

    def normalise(self, current):
        definition = current.get("def") or {}
        return {
            "database": self.params["database"],
            "ddoc": current["ddoc"],
            "name": current["name"],
            "fields": normalise_fields(definition.get("fields")),
            "partial_filter_selector": comparable_selector(
                definition.get("partial_filter_selector")
            ),
        }

    def desired(self, current):
        return {
            "database": self.params["database"],
            "ddoc": self.ddoc,
            "name": self.params["name"],
            "fields": list(self.params["fields"]),
            "partial_filter_selector": comparable_selector(self.params["partial_filter_selector"]),
        }

    def create(self, desired):
        index = {"fields": desired["fields"]}
        if self.params["partial_filter_selector"]:
            # As the task gives it: CouchDB normalises it itself.
            index["partial_filter_selector"] = self.params["partial_filter_selector"]
        # Without the prefix: pouchdb-server would make "_design/_design/x" of "_design/x".
        ddoc = desired["ddoc"][len(DESIGN_PREFIX) :]
        body = {"index": index, "ddoc": ddoc, "name": desired["name"], "type": "json"}
        self.client.post(self.db_path + "/_index", body)

    def update(self, current, desired):
        self.delete(current)
        self.create(desired)

    def delete(self, current):
        # "_design%2Fx" works on CouchDB and pouchdb-server; pouchdb-server fails on a bare "x".
        self.client.delete(
            "%s/_index/%s/json/%s"
            % (self.db_path, quote_segment(current["ddoc"]), quote_segment(current["name"]))
        )


def argument_spec():
    """The connection options and this module's own."""
    spec = couchdb_argument_spec()
    spec.update(
        database=dict(type="str", required=True),
        ddoc=dict(type="str", required=True),
        name=dict(type="str", required=True),
        fields=dict(type="list", elements="str"),
        partial_filter_selector=dict(type="dict"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("state", "present", ("fields",))],
    )
    run_module(module, Index)


if __name__ == "__main__":
    main()
