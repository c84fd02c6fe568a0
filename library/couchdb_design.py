#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: couchdb_design
short_description: Create or delete a CouchDB design document of map/reduce views
description:
  - Makes sure a design document of a database has the given language and views, or does not
    exist.
  - A design document that already has that language and those views is not changed (so its
    views are not rebuilt). One with others is written over, keeping nothing else of it.
  - Works with Apache CouchDB 3.x and pouchdb-server.
author:
  - kuno authors
attributes:
  check_mode:
    support: full
    description: Reports what would change and writes nothing.
  diff_mode:
    support: full
    description: Shows the design document before and after.
extends_documentation_fragment:
  - kuno_couchdb
options:
  database:
    description: The database that holds the design document. It must exist.
    type: str
    required: true
  ddoc:
    description: The design document's name, with or without its V(_design/) prefix.
    type: str
    required: true
  language:
    description: The language of the views' functions.
    type: str
    default: javascript
  views:
    description:
      - View name to its V(map) function (source text) and optional V(reduce) (a built-in such
        as V(_sum), or source text).
      - Required when O(state=present).
    type: dict
  state:
    description: Whether the design document should exist.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - name: CouchDB design documents
    description: PUT, GET and DELETE of /{db}/_design/{ddoc}.
    link: https://docs.couchdb.org/en/stable/api/ddoc/common.html
"""

EXAMPLES = r"""
- name: Messages and bytes per recipient
  couchdb_design:
    url: http://127.0.0.1:5984
    user: admin
    password: "{{ couchdb_admin_password }}"
    database: messages
    ddoc: queues
    views:
      size:
        map: "function (doc) { emit(doc.recipientId, 1); }"
        reduce: _sum
"""

RETURN = r"""
design:
  description: The design document as the task leaves it (would leave it, in check mode); null
    when absent.
  returned: always
  type: dict
  contains:
    database:
      description: The database.
      type: str
      sample: messages
    id:
      description: The document id, with its V(_design/) prefix.
      type: str
      sample: _design/queues
    language:
      description: The views' language.
      type: str
      sample: javascript
    views:
      description: The views.
      type: dict
operation:
  description: What the task did (or would do in check mode).
  returned: changed
  type: str
  sample: create
differences:
  description: Names of the values an update changed.
  returned: when O(state=present) wrote over an existing design document
  type: list
  elements: str
diff:
  description: The design document before and after, when Ansible runs with C(--diff).
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.couchdb import (
    CouchDBModule,
    couchdb_argument_spec,
    quote_segment,
    run_module,
)

DESIGN_PREFIX = "_design/"


class Design(CouchDBModule):
    result_key = "design"

    @property
    def design_id(self):
        ddoc = self.params["ddoc"]
        return ddoc if ddoc.startswith(DESIGN_PREFIX) else DESIGN_PREFIX + ddoc

    @property
    def path(self):
        return "/%s/%s%s" % (
            quote_segment(self.params["database"]),
            DESIGN_PREFIX,
            quote_segment(self.design_id[len(DESIGN_PREFIX) :]),
        )

    def read(self):
        # No database (yet: check mode after a predicted create) has no design document.
        return self.client.get_or_none(self.path)

    def normalise(self, current):
        return {
            "database": self.params["database"],
            "id": self.design_id,
            "language": current.get("language"),
            "views": current.get("views"),
        }

    def desired(self, current):
        return {
            "database": self.params["database"],
            "id": self.design_id,
            "language": self.params["language"],
            "views": self.params["views"],
        }

    def body(self, desired):
        return {"language": desired["language"], "views": desired["views"]}

    def create(self, desired):
        self.client.put(self.path, self.body(desired))

    def update(self, current, desired):
        self.client.put(self.path, dict(self.body(desired), _rev=current["_rev"]))

    def delete(self, current):
        self.client.delete(self.path, query={"rev": current["_rev"]})


def argument_spec():
    """The connection options and this module's own."""
    spec = couchdb_argument_spec()
    spec.update(
        database=dict(type="str", required=True),
        ddoc=dict(type="str", required=True),
        language=dict(type="str", default="javascript"),
        views=dict(type="dict"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("state", "present", ("views",))],
    )
    run_module(module, Design)


if __name__ == "__main__":
    main()
