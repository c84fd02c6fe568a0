"""The seed's testing scenarios 1, 2, 3 and 5, end to end over real sockets."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from kuno.client.api import KunoClient
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import UserFactory
from tests.support.messages import message_body
from tests.support.pouchdb import eventually


async def node_ids(client: KunoClient, node_url: str) -> list[str]:
    """The ids one standard node returns to the user, straight from its API."""
    return [m["id"] for m in await client._all_pages(node_url, client.username or "")]


async def test_scenario_1_online_delivery_reaches_the_socket_and_every_node(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    async with bob.connect() as bob_socket, alice.connect() as alice_socket:
        ack = await alice_socket.send(bob.username, "hi bob, you are online")
        message = await bob_socket.receive(within=5)
    assert (ack.delivered, ack.stored, ack.nodes) == (True, 3, 3)
    assert (message.id, message.sender, message.text) == (
        ack.id,
        alice.username,
        "hi bob, you are online",
    )
    assert cluster.stored_on(ack.id) == [True, True, True]


async def test_scenario_1_received_deletes_the_message_from_every_node(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    async with bob.connect() as bob_socket, alice.connect() as alice_socket:
        ack = await alice_socket.send(bob.username, "read me once")
        message = await bob_socket.receive(within=5)
        await bob_socket.received(message.id)
        await eventually(lambda: cluster.stored_on(ack.id) == [False, False, False], within=10)
    # Not fetched again later: every node's list for bob is empty.
    await cluster.assert_nothing_left_for(bob)


async def test_scenario_2_offline_recipient_message_is_on_every_node(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    async with alice.connect() as alice_socket:
        ack = await alice_socket.send(bob.username, "you were away")
    assert (ack.delivered, ack.stored, ack.nodes) == (False, 3, 3)
    for url in cluster.node_urls:
        assert await node_ids(bob, url) == [ack.id]
    assert cluster.stored_on(ack.id) == [True, True, True]


async def test_scenario_3_inbox_dedupes_decrypts_orders_then_empties_every_node(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, carol, bob = await new_user("alice"), await new_user("carol"), await new_user("bob")
    async with alice.connect() as alice_socket, carol.connect() as carol_socket:
        sent = [
            await alice_socket.send(bob.username, "one"),
            await carol_socket.send(bob.username, "two"),
            await alice_socket.send(bob.username, "three"),
        ]
    inbox = await bob.inbox()
    # Each message is on all three nodes, and shows up once.
    assert [(m.id, m.sender, m.text) for m in inbox.messages] == [
        (sent[0].id, alice.username, "one"),
        (sent[1].id, carol.username, "two"),
        (sent[2].id, alice.username, "three"),
    ]
    assert sorted(inbox.nodes_answered) == sorted(cluster.node_urls)
    assert inbox.deleted == {ack.id: 3 for ack in sent}
    await cluster.assert_nothing_left_for(bob)


async def test_scenario_3_inbox_pages_through_more_than_one_page(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    bob.page_limit = 4
    async with alice.connect() as alice_socket:
        acks = [await alice_socket.send(bob.username, f"message {i}") for i in range(11)]
    inbox = await bob.inbox()
    assert [m.text for m in inbox.messages] == [f"message {i}" for i in range(11)]
    assert [m.id for m in inbox.messages] == [ack.id for ack in acks]
    await cluster.assert_nothing_left_for(bob)


async def test_scenario_3_an_undecryptable_message_is_reported_and_removed(
    cluster: Cluster, new_user: UserFactory, master_token: str
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    garbage = message_body(recipient=bob.username, sender=alice.username)
    async with aiohttp.ClientSession() as session:
        for url in cluster.node_urls:
            response = await session.post(
                f"{url}/messages",
                json=garbage,
                headers={"Authorization": f"Bearer {master_token}"},
            )
            assert response.status in (200, 201), await response.text()
    async with alice.connect() as alice_socket:
        good = await alice_socket.send(bob.username, "this one is fine")
    inbox = await bob.inbox()
    assert [m.text for m in inbox.messages] == ["this one is fine"]
    assert [m.id for m in inbox.undecryptable] == [garbage["id"]]
    assert "decrypt" in (inbox.undecryptable[0].error or "")
    assert inbox.deleted == {garbage["id"]: 3, good.id: 3}
    # Not fetched forever: the next inbox is empty.
    again = await bob.inbox()
    assert (again.messages, again.undecryptable) == ([], [])


@pytest.mark.parametrize("cluster_options", [{"message_ttl_days": 1 / 86400}])  # 1 s
async def test_scenario_5_an_expired_message_is_never_returned_and_is_deleted(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    async with alice.connect() as alice_socket:
        ack = await alice_socket.send(bob.username, "this will expire")
    assert cluster.stored_on(ack.id) == [True, True, True]
    await asyncio.sleep(1.2)
    inbox = await bob.inbox()
    assert (inbox.messages, inbox.undecryptable) == ([], [])
    # The nodes deleted it when the read found it expired.
    await eventually(lambda: cluster.stored_on(ack.id) == [False, False, False], within=10)
