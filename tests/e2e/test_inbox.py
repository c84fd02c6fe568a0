"""`kuno inbox` with a thousand stored messages (issue 14.3): all shown, in send order, and
deleted from every node with a page of ids per request."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from kuno.master.routing import SendOrder
from tests.e2e.cluster import Cluster, unique
from tests.e2e.conftest import PASSWORD, UserFactory
from tests.e2e.test_cli import Kuno
from tests.support.messages import sealed_bodies

COUNT = 1000


async def store_as_the_master(
    cluster: Cluster, master_token: str, bodies: list[dict], batch: int = 100
) -> None:
    """The same documents on every node, as the master's fan-out writes them."""
    headers = {"Authorization": f"Bearer {master_token}"}
    async with aiohttp.ClientSession() as session:
        for url in cluster.node_urls:
            for start in range(0, len(bodies), batch):
                chunk = {"messages": bodies[start : start + batch]}
                # A loaded machine's pouchdb-server may miss the node's timeout (503):
                # resent, as the master's sender would.
                for _attempt in range(3):
                    async with session.post(
                        f"{url}/messages/batch", json=chunk, headers=headers
                    ) as response:
                        answer = await response.text()
                        if response.status != 503:
                            break
                assert response.status == 200, answer


async def listed_on_every_node(cluster: Cluster, user: str, master_token: str) -> list[int]:
    headers = {"Authorization": f"Bearer {master_token}"}
    counts = []
    async with aiohttp.ClientSession() as session:
        for url in cluster.node_urls:
            async with session.get(
                f"{url}/messages/{user}", params={"limit": "1000"}, headers=headers
            ) as response:
                counts.append(len((await response.json())["messages"]))
    return counts


async def test_kuno_inbox_shows_a_thousand_messages_in_order_and_deletes_every_one(
    cluster: Cluster, new_user: UserFactory, tmp_path: Path, master_token: str
) -> None:
    bob_name = unique("bob")
    bob = Kuno(cluster, tmp_path / "bob")
    assert (await bob.run("register", bob_name, "--password-stdin", stdin=PASSWORD))[0] == 0
    alice = await new_user("alice")
    # A burst: a handful of milliseconds for the thousand.
    bodies = await sealed_bodies(alice, bob_name, SendOrder(), COUNT, per_ms=200)
    await store_as_the_master(cluster, master_token, bodies)
    assert await listed_on_every_node(cluster, bob_name, master_token) == [COUNT] * 3

    code, out, err = await bob.run("inbox")
    assert code == 0, err
    shown = [line.split(": ", 1)[1] for line in out.splitlines()]
    assert shown == [f"message {index}" for index in range(COUNT)]
    assert err.strip() == f"{COUNT} messages, 0 undecryptable removed"
    assert await listed_on_every_node(cluster, bob_name, master_token) == [0, 0, 0]
