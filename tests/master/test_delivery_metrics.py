"""The delivery success rate as metrics: sends stored on all N nodes, on some, on none."""

from __future__ import annotations

import math

import aiohttp

from kuno.master.metrics import outcome_of
from tests.e2e.cluster import RunningApp
from tests.master.conftest import account, open_socket
from tests.master.test_fanout import Starter, nodes, samples, start_master  # noqa: F401
from tests.master.test_websocket import send_frame


def test_an_outcome_counts_the_nodes_that_stored() -> None:
    assert outcome_of(3, 3) == "all"
    assert outcome_of(2, 3) == "partial"
    assert outcome_of(0, 3) == "none"


async def test_sends_are_counted_by_how_many_nodes_stored_them(
    start_master: Starter,  # noqa: F811
    nodes: list[RunningApp],  # noqa: F811
) -> None:
    master = await start_master(
        storage_enabled=True, standard_node_urls=[node.url for node in nodes], store_timeout=1
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{master.url}/metrics") as response:
            before = samples(await response.text())
        alice = await account(session, master, "alice")
        await account(session, master, "bob")
        ws = await open_socket(session, master, alice)
        await ws.send_json(send_frame("bob"))
        assert (await ws.receive_json(timeout=10))["stored"] == 2
        await nodes[1].stop()
        await ws.send_json(send_frame("bob"))
        assert (await ws.receive_json(timeout=10))["stored"] == 1
        await nodes[0].stop()
        await ws.send_json(send_frame("bob"))
        assert (await ws.receive_json(timeout=10))["type"] == "error"  # not_stored
        async with session.get(f"{master.url}/metrics") as response:
            metrics = samples(await response.text())
    assert math.isnan(before[("kuno_master_delivery_success_ratio", ())])
    assert before[("kuno_master_store_outcomes_total", (("outcome", "none"),))] == 0
    assert before[("kuno_master_storage_nodes", ())] == 2
    for outcome in ("all", "partial", "none"):
        assert metrics[("kuno_master_store_outcomes_total", (("outcome", outcome),))] == 1
    assert metrics[("kuno_master_delivery_success_ratio", ())] == 1 / 3
    assert metrics[("kuno_master_delivery_failure_ratio", ())] == 1 / 3
