"""After the partition healed: every node holds the same messages, every message sent on
either side and not deleted, and no deleted one has a live revision anywhere."""

from __future__ import annotations

from kunomol import System, converged, describe, expected_ids, wait_until


def test_nothing_is_lost_and_nothing_deleted_comes_back(system: System) -> None:
    wait_until(
        lambda: converged(system, system.nodes),
        within=30,
        what=f"converged ({describe(system, system.nodes)})",
    )
    state = system.load()
    want = expected_ids(state)
    partition_tags = ["before", "majority", "island", "both-sides"]
    assert len(expected_ids(state, partition_tags)) == 20 + 20 + 20 + 4 - (5 + 5 + 3 + 3 + 2 + 2)
    assert len(expected_ids(state, ["after-pause"])) == 5
    for node in system.nodes:
        assert system.message_ids(node) == want, node
        for message_id in state["deleted"]:
            assert system.live_leaves(node, message_id) == 0, (node, message_id)


def test_every_replication_runs_again(system: System) -> None:
    for node in system.nodes:
        assert system.replications_running(node), (node, system.replications(node))
