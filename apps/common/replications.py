"""Replications: what ours are called, and the one reading of a replication's state.

Pure Python with no import beyond the standard library, because two worlds read this very
file: the package (`kuno.common.replications`: the standard node's /health, the tests) and
the Ansible modules (`ansible.module_utils.replications`: module_utils/replications.py is a
symlink to this file, which AnsiballZ follows when it packs a module). See
docs/ARCHITECTURE.md, "One file, two importers".

States, as the servers report them:

- Apache CouchDB 3, `/_scheduler/docs` (and `_scheduler/jobs`): `initializing` (the
  document is being turned into a job), `pending` (a job waiting for a scheduler slot; with
  an error in its `info` after a crash), `running`, `crashing` (crashed; retried with an
  exponential back-off), `failed` (the document cannot become a job, e.g. a duplicate),
  `error` (a processing error, retried), `completed` (a one-off replication ended well).
  The job's last error is `info.error`.
- pouchdb-server 4.2 (the test stand-in) writes `_replication_state` into the document:
  `triggered` (started), `error` (gave up; `_replication_state_reason`), `completed`.

A single `running` reading proves nothing on CouchDB 3, which shows a pull whose source
refuses its credentials as running for seconds before it crashes (DESIGN.md, "CouchDB
flavours"): a replication counts as RUNNING only once it has stayed running, with no
error, for a settle time.
"""

from __future__ import annotations

# --- conditions: the one classification -------------------------------------------------

RUNNING = "running"  # running (stand-in: triggered) for the settle time or longer, no error
SETTLING = "settling"  # running with no error, not yet for the settle time (or no time known)
COMPLETED = "completed"  # a one-off replication that ended well
FAILED = "failed"  # crashing, failed or error, or any other state with an error
WAITING = "waiting"  # no job yet: no state, initializing, pending without an error
STALLED = "stalled"  # running, but not carrying its source's changes (told by a second look)

CONDITIONS = (RUNNING, SETTLING, COMPLETED, FAILED, WAITING, STALLED)
# Conditions in which nothing needs doing: the replication carries its changes.
HEALTHY = (RUNNING, COMPLETED)

# States in which a job carries changes: CouchDB 3's, the stand-in's.
RUNNING_STATES = ("running", "triggered")
# States a replication ends up in on its own that need an operator or a new job.
FAILED_STATES = ("crashing", "failed", "error")
COMPLETED_STATE = "completed"

# Seconds a replication must have stayed running, with no error in its job info, before it
# counts as running. CouchDB 3.5 showed a pull whose source refuses its credentials as
# running for 2.4-5.4 s, then crashing (replication_auth_error).
SETTLE_SECONDS = 10.0


def classify(
    state: str | None,
    reason: str | None = None,
    running_for: float | None = None,
    settle_seconds: float = SETTLE_SECONDS,
    stalled: bool | None = None,
) -> str:
    """The condition of one replication, one of CONDITIONS.

    state: the server's state (see the module docstring), None when it shows none yet.
    reason: the server's error for it (CouchDB's info.error, the stand-in's
      _replication_state_reason), None when there is none.
    running_for: seconds it has been running, on the server's clock; None when unknown.
    settle_seconds: how long it must have run to count as RUNNING.
    stalled: True when a second look found it running but not carrying its source's
      changes (couchdb_replication_info's stall test), else False or None.

    FAILED: a state in FAILED_STATES, or an error with any state but completed (CouchDB's
    pending after a crash; a running job whose info carries an error). STALLED: running
    but stalled. COMPLETED: completed. RUNNING/SETTLING: a state in RUNNING_STATES, by
    running_for against settle_seconds. WAITING: anything else (no state, initializing,
    pending without an error).
    """
    if state in FAILED_STATES or (reason and state != COMPLETED_STATE):
        return FAILED
    if state == COMPLETED_STATE:
        return COMPLETED
    if state not in RUNNING_STATES:
        return WAITING
    if stalled:
        return STALLED
    if running_for is None or running_for < settle_seconds:
        return SETTLING
    return RUNNING


def is_failed(state: str | None, reason: str | None = None) -> bool:
    """Whether a replication in this state (with this error, if any) has failed."""
    return classify(state, reason) == FAILED


# --- names ---------------------------------------------------------------------------------

ID_PREFIX = "kuno-"


def replication_id(database: str, peer: str, prefix: str = ID_PREFIX) -> str:
    """The _replicator document id of the pull of `database` from node `peer` into a node:
    "kuno-messages-from-node2". The document lives on the pulling node."""
    return f"{prefix}{database}-from-{peer}"


def pull_ids(databases: list[str], peers: list[str], prefix: str = ID_PREFIX) -> list[str]:
    """The ids of a node's pulls: every database from every peer, database by database."""
    return [replication_id(database, peer, prefix) for database in databases for peer in peers]
