"""After A → B → rollback → disable storage → restore: release A runs with its own
configuration, and every message stored under any release is on every node."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kunomol import System, converged, describe, wait_until


def release_a() -> str:
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "kuno-release").read_text().strip()


def image_id(host, name: str) -> str:
    result = host.run("docker image inspect -f '{{.Id}}' %s", name)
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def test_release_a_runs_with_its_images_and_configuration(host, system: System) -> None:
    a_standard = image_id(host, f"kuno/standard:{release_a()}")
    b_standard = image_id(host, f"kuno/standard:{release_a()}-b")
    assert a_standard != b_standard
    for node in system.nodes:
        record = json.loads(host.file(f"/opt/{system.project}/releases/{node}.json").content_string)
        assert record["current"]["release"] == release_a()
        assert record["previous"]["release"] == f"{release_a()}-b"
        # Rolled back by image id (the record's), so a rebuilt tag cannot change it.
        standard = host.docker(system.container("standard", node)).inspect()
        assert standard["Image"] == a_standard, node
        assert not any(env.startswith("KUNO_PAGE_LIMIT=") for env in standard["Config"]["Env"])
    master = host.docker(system.container("master")).inspect()
    assert master["Image"] == image_id(host, f"kuno/master:{release_a()}")
    assert "KUNO_STORAGE_ENABLED=true" in master["Config"]["Env"]


def test_every_message_stored_under_any_release_is_on_every_node(system: System) -> None:
    state = system.load()
    assert {tag: len(ids) for tag, ids in state["sent"].items()} == {
        "release-a": 10,
        "release-b": 10,
        "after-rollback": 3,
        "restored": 10,
    }
    wait_until(
        lambda: converged(system, system.nodes),
        within=30,
        what=f"converged ({describe(system, system.nodes)})",
    )
    unstored = set(state["unstored"]["storage-disabled"])
    for node in system.nodes:
        assert not unstored & system.message_ids(node), node


def test_every_replication_runs(system: System) -> None:
    for node in system.nodes:
        assert system.replications_running(node), (node, system.replications(node))
