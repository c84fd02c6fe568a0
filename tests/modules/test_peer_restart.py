"""A pull replication resumes by itself after its source's process restarted.

pouchdb-server's replicator (node-fetch 2.6.7) used to wait for good on the long-poll a
restarting peer cut short; images/pouchdb-server/docker-entrypoint.js, preloaded by the image
and by PouchServer, makes it fail so that the replicator retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pouchdb import PouchServer, http_json, running, wait_until

pytestmark = pytest.mark.standin

DB = "messages"
# Seconds the pull gets to carry a write made on the restarted source; the replicator's
# back-off after a refused connection starts below 2 s and doubles while the source is down.
RESUME_BOUND = 30.0


@pytest.fixture
def source_and_target(test_dir: Path) -> Iterator[tuple[PouchServer, PouchServer]]:
    servers = (
        PouchServer(test_dir / "source", "source"),
        PouchServer(test_dir / "target", "target"),
    )
    with running(*servers, db=DB) as started:
        yield started


def write(server: PouchServer, doc_id: str) -> None:
    status, body = http_json("PUT", f"{server.db_url(DB)}/{doc_id}", {"kind": "probe"})
    assert status == 201, body


def holds(server: PouchServer, doc_id: str) -> bool:
    return http_json("GET", f"{server.db_url(DB)}/{doc_id}")[0] == 200


def test_a_pull_resumes_after_its_source_restarted(source_and_target) -> None:
    source, target = source_and_target
    target.replicate_from(source, DB)
    write(source, "before")
    wait_until(lambda: holds(target, "before"), timeout=15)

    source.stop()  # its process exits mid long-poll: the target's _changes request is cut short
    source.start()
    write(source, "after")
    started = time.monotonic()
    wait_until(lambda: holds(target, "after"), timeout=RESUME_BOUND, interval=0.1)
    seconds = time.monotonic() - started
    print(f"pull resumed: a write on the restarted source replicated in {seconds:.1f} s")
