"""What images/pouchdb-server/docker-entrypoint.js changes in pouchdb-server.

The file is the image's entrypoint and PouchServer's preload. It holds back the
checkpoints pouchdb would write after every replicated batch and writes the newest one
when KUNO_CHECKPOINT_INTERVAL_MS is up, as CouchDB's replicator does; and it measures a
database's disk size at most every KUNO_DISK_SIZE_CACHE_MS, not on every request. (The
replication that resumes after a peer's restart: test_peer_restart.py.)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pouchdb import PouchServer, http_json, running, wait_until

pytestmark = pytest.mark.standin

DB = "messages"
INTERVAL_S = 4.0
WRITES = 15
# Seconds a pull's source is away, and more than the back-off its retries built meanwhile.
SOURCE_AWAY_S = 6
OLD_BACK_OFF_S = 12
CHECKPOINT_PUT = re.compile(rf"PUT /{DB}/(_local/[^ ?\x1b]+)")


@pytest.fixture
def source_and_target(test_dir: Path) -> Iterator[tuple[PouchServer, PouchServer]]:
    # The source logs every request: the target's replication checkpoints on it too.
    (test_dir / "source").mkdir(parents=True)
    (test_dir / "source" / "config.json").write_text(json.dumps({"log": {"level": "info"}}))
    servers = (
        PouchServer(test_dir / "source", "source"),
        PouchServer(
            test_dir / "target",
            "target",
            env={"KUNO_CHECKPOINT_INTERVAL_MS": str(int(INTERVAL_S * 1000))},
        ),
    )
    with running(*servers, db=DB) as started:
        yield started


def checkpoint_puts(server: PouchServer) -> list[str]:
    """The _local document ids of the checkpoints written on the server so far."""
    return CHECKPOINT_PUT.findall((server.workdir / "server.log").read_text(errors="replace"))


def test_checkpoints_are_written_at_the_interval_and_the_newest_one_last(
    source_and_target,
) -> None:
    source, target = source_and_target
    target.replicate_from(source, DB)
    wait_until(lambda: checkpoint_puts(source), timeout=15)  # the one after catching up
    started = time.monotonic()
    for number in range(WRITES):
        status, body = http_json("PUT", f"{source.db_url(DB)}/doc-{number}", {"n": number})
        assert status == 201, body
        time.sleep(0.05)
    wait_until(lambda: len(target.all_ids(DB)) == WRITES, timeout=15)
    elapsed = time.monotonic() - started

    # pouchdb alone writes one per replicated batch: here about one per write.
    assert len(checkpoint_puts(source)) <= 2 + int(elapsed // INTERVAL_S)

    _, info = http_json("GET", source.db_url(DB))
    checkpoint_path = checkpoint_puts(source)[0]  # as logged: URL-encoded

    def newest_written() -> bool:
        status, checkpoint = http_json("GET", f"{source.db_url(DB)}/{checkpoint_path}")
        return status == 200 and checkpoint["last_seq"] == info["update_seq"]

    wait_until(newest_written, timeout=INTERVAL_S + 10)


def test_the_disk_size_is_measured_again_only_after_the_cache_interval(test_dir: Path) -> None:
    server = PouchServer(test_dir / "server", "server", env={"KUNO_DISK_SIZE_CACHE_MS": "5000"})

    def disk_size() -> int:
        status, info = http_json("GET", server.db_url(DB))
        assert status == 200, info
        return info["disk_size"]

    with running(server, db=DB):
        before = disk_size()
        docs = [{"_id": f"doc-{n}", "padding": "x" * 1000} for n in range(200)]
        status, body = http_json("POST", server.db_url(DB) + "/_bulk_docs", {"docs": docs})
        assert status == 201, body
        assert disk_size() == before  # measured less than the interval ago
        wait_until(lambda: disk_size() > before + 100_000, timeout=10, interval=0.5)


def replicator_doc(server: PouchServer, doc_id: str) -> dict:
    _status, doc = http_json("GET", f"{server.url}/_replicator/{doc_id}")
    return doc


def test_a_replication_deleted_and_written_again_is_a_new_job_that_stays(test_dir: Path) -> None:
    """How heal.yml, the watchdog and deploy.yml restart or restore a pull: its _replicator
    document deleted and written again. pouchdb-server took the new document for a duplicate
    of the job it had cancelled and ran nothing; the cancelled job, once its retry back-off
    ended, marked the new document `completed`."""
    servers = (PouchServer(test_dir / "source", "source"), PouchServer(test_dir / "target"))
    with running(*servers, db=DB) as (source, target):
        doc_id = "kuno-messages-from-source"
        target.replicate_from(source, DB, doc_id)
        wait_until(lambda: replicator_doc(target, doc_id).get("_replication_state") == "triggered")
        # Its source goes away for a while: the pull backs off, retrying later and later.
        source.stop()
        time.sleep(SOURCE_AWAY_S)
        source.start()
        old = replicator_doc(target, doc_id)
        status, body = http_json("DELETE", f"{target.url}/_replicator/{doc_id}?rev={old['_rev']}")
        assert status == 200, body
        written = {key: value for key, value in old.items() if not key.startswith("_")}
        status, body = http_json("PUT", f"{target.url}/_replicator/{doc_id}", written)
        assert status == 201, body

        def carries(doc_name: str) -> dict:
            status, body = http_json("PUT", f"{source.db_url(DB)}/{doc_name}", {"kind": "probe"})
            assert status == 201, body
            wait_until(lambda: doc_name in target.all_ids(DB), timeout=15)
            return replicator_doc(target, doc_id)

        new = carries("after-restart")
        assert new["_replication_state"] == "triggered", new
        assert new["_replication_id"] != old["_replication_id"]
        # The cancelled job's back-off (at most twice the time its source was away) ends.
        time.sleep(OLD_BACK_OFF_S)
        assert carries("after-back-off") == new
