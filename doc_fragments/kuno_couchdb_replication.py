# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The options of one replication document that couchdb_replication and
    couchdb_replication_job share (module_utils/couchdb_replication.py,
    replication_argument_spec())."""

    DOCUMENTATION = r"""
options:
  url:
    description: Base URL of the server that holds the C(_replicator) database, without credentials.
  id:
    description: The C(_id) of the replication document.
    type: str
    required: true
  replicator_db:
    description: The replicator database.
    type: str
    default: _replicator
  settle_time:
    description:
      - Seconds a replication must have stayed running, with no error, before a wait counts
        it as running.
      - CouchDB 3.5 showed a pull whose source refuses its credentials as C(running) for 2.4 to
        5.4 s before C(crashing); the default leaves a margin above that.
    type: float
    default: 10
"""
