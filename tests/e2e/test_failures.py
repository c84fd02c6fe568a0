"""Storage nodes failing under the master: what is acked is stored, and nothing twice."""

from __future__ import annotations

import asyncio

import pytest

from kuno.client.api import SendError
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import UserFactory
from tests.support.pouchdb import eventually


async def test_one_standard_node_down_messages_stored_on_the_others_and_ack_says_2(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    await cluster.stop_node(0)
    async with alice.connect() as alice_socket:
        acks = [await alice_socket.send(bob.username, f"while node1 is down {i}") for i in range(3)]
    assert [(a.stored, a.nodes) for a in acks] == [(2, 3)] * 3
    for url in cluster.node_urls[1:]:
        page = await bob._all_pages(url, bob.username or "")
        assert [m["id"] for m in page] == [a.id for a in acks]
    # Node 1's CouchDB still gets them, by replication.
    await eventually(lambda: all(all(cluster.stored_on(a.id)) for a in acks), within=15)
    await cluster.start_node(0)
    inbox = await bob.inbox()
    assert [m.text for m in inbox.messages] == [f"while node1 is down {i}" for i in range(3)]
    assert inbox.deleted == {a.id: 3 for a in acks}


async def test_every_node_down_the_sender_gets_an_error_and_a_resend_stores_it_once(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    for index in range(3):
        await cluster.stop_node(index)
    async with alice.connect() as alice_socket:
        outgoing = await alice.seal(bob.username or "", "nobody stores this yet")
        with pytest.raises(SendError) as refused:
            await alice_socket.send_sealed(outgoing)
        assert refused.value.message_id == outgoing.id
        assert "not stored" in refused.value.reason
        assert cluster.stored_on(outgoing.id) == [False, False, False]
        for index in range(3):
            await cluster.start_node(index)
        ack = await alice_socket.send_sealed(outgoing)
        assert (ack.id, ack.stored, ack.nodes) == (outgoing.id, 3, 3)
        again = await alice_socket.send_sealed(outgoing)
        assert (again.id, again.stored) == (outgoing.id, 3)
    inbox = await bob.inbox()
    assert [(m.id, m.text) for m in inbox.messages] == [(outgoing.id, "nobody stores this yet")]


async def test_a_resend_is_delivered_once_and_a_received_message_stays_deleted(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    async with bob.connect() as bob_socket, alice.connect() as alice_socket:
        outgoing = await alice.seal(bob.username or "", "only once")
        first = await alice_socket.send_sealed(outgoing)
        second = await alice_socket.send_sealed(outgoing)
        assert (first.delivered, second.delivered) == (True, True)
        message = await bob_socket.receive(within=5)
        assert message.id == outgoing.id
        with pytest.raises(TimeoutError):
            await bob_socket.receive(within=0.5)
        await bob_socket.received(message.id)
        await eventually(lambda: cluster.stored_on(outgoing.id) == [False] * 3, within=10)
        # The sender did not see its ack and resends: the message must not come back.
        third = await alice_socket.send_sealed(outgoing)
        assert third.stored == 3
        with pytest.raises(TimeoutError):
            await bob_socket.receive(within=0.5)
    await asyncio.sleep(0.5)  # let replication carry anything that would resurrect it
    assert cluster.stored_on(outgoing.id) == [False, False, False]
    assert (await bob.inbox()).messages == []


async def test_the_same_id_with_other_content_is_refused(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    async with alice.connect() as alice_socket:
        original = await alice.seal(bob.username or "", "original")
        await alice_socket.send_sealed(original)
        forged = await alice.seal(bob.username or "", "replacement", message_id=original.id)
        with pytest.raises(SendError, match="another message"):
            await alice_socket.send_sealed(forged)
    assert [m.text for m in (await bob.inbox()).messages] == ["original"]
