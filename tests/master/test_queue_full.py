"""A send over its recipient's queue bound gets an error frame naming the reason."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from kuno.standard.app import create_app as create_standard
from tests.e2e.cluster import RunningApp, standard_settings
from tests.master.conftest import account, open_socket
from tests.master.test_fanout import Starter, start_master  # noqa: F401 - a fixture
from tests.master.test_websocket import send_frame
from tests.support.pouchdb import PouchServer


async def test_a_send_over_the_recipients_queue_bound_is_an_error_frame(
    start_master: Starter,  # noqa: F811
    couchdb_cluster: list[PouchServer],
    database: str,
    public_key_file: Path,
) -> None:
    nodes = []
    for index, server in enumerate(couchdb_cluster[:2]):
        settings = standard_settings(server, f"node{index + 1}", database, public_key_file)
        bounded = settings.model_copy(update={"max_queue_messages": 2})
        nodes.append(await RunningApp().start(create_standard(bounded)))
    try:
        master = await start_master(
            storage_enabled=True, standard_node_urls=[node.url for node in nodes]
        )
        async with aiohttp.ClientSession() as session:
            alice = await account(session, master, "alice")
            await account(session, master, "bob")
            ws = await open_socket(session, master, alice)
            answers = []
            for _ in range(3):
                frame = send_frame("bob")
                await ws.send_json(frame)
                answers.append((frame["id"], await ws.receive_json(timeout=10)))
            await ws.close()
        # Nothing stored was dropped for it.
        assert couchdb_cluster[0].all_ids(database) == {answer_id for answer_id, _ in answers[:2]}
    finally:
        for node in nodes:
            await node.stop()
    assert [answer["type"] for _, answer in answers] == ["ack", "ack", "error"], answers
    message_id, error = answers[2]
    assert error["id"] == message_id
    assert "bob's queue is full" in error["reason"]
