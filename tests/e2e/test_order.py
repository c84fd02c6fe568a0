"""Send order (issue 14.2): the order the master accepted one sender's messages to one
recipient is the order every reader gets — inbox pages, online delivery, resends, a master
restart between bursts — however many messages share a millisecond."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kuno.client.api import KunoClient, Outgoing, Socket
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import UserFactory

BURST = 300
# Bursts far over the default send burst (100) would be rate limited, not reordered; a
# loaded machine may take seconds to store a burst on every node.
UNLIMITED = {"send_burst": 5000, "send_per_second": 5000.0, "store_timeout": 15.0}


async def sealed(sender: KunoClient, to: str, texts: list[str]) -> list[Outgoing]:
    return [await sender.seal(to, text) for text in texts]


async def burst(socket: Socket, frames: list[Outgoing]) -> None:
    """Every frame written back to back (in list order) before any ack is awaited."""
    acks = await asyncio.gather(*(socket.send_sealed(frame, within=60) for frame in frames))
    assert all(ack.stored == ack.nodes == 3 for ack in acks)


def numbered(prefix: str, count: int) -> list[str]:
    return [f"{prefix} {index}" for index in range(count)]


async def burst_to_bob(
    new_user: UserFactory, prefix: str
) -> tuple[KunoClient, KunoClient, list[str], list[Outgoing]]:
    """New users alice and bob, and a burst of texts `prefix 0`, `prefix 1`, ... alice
    sealed for bob."""
    alice, bob = await new_user("alice"), await new_user("bob")
    texts = numbered(prefix, BURST)
    return alice, bob, texts, await sealed(alice, bob.username or "", texts)


@pytest.mark.parametrize("cluster_options", [UNLIMITED])
async def test_a_burst_reads_in_send_order_page_after_page(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob, texts, frames = await burst_to_bob(new_user, "burst")
    async with alice.connect() as socket:
        await burst(socket, frames)
    # Pages of 7 end inside runs of messages sharing one millisecond.
    bob.page_limit = 7
    for url in cluster.node_urls:
        listed = await bob._all_pages(url, bob.username or "")
        assert [m["id"] for m in listed] == [f.id for f in frames], url
        timestamps = [m["timestamp"] for m in listed]
        assert len(set(timestamps)) < len(timestamps)  # ties did happen
    inbox = await bob.inbox()
    assert [m.text for m in inbox.messages] == texts


@pytest.mark.parametrize("cluster_options", [UNLIMITED])
async def test_two_senders_bursts_interleaved_keep_each_senders_order(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, carol, bob = await new_user("alice"), await new_user("carol"), await new_user("bob")
    from_alice = await sealed(alice, bob.username or "", numbered("alice", BURST // 2))
    from_carol = await sealed(carol, bob.username or "", numbered("carol", BURST // 2))
    async with alice.connect() as alice_socket, carol.connect() as carol_socket:
        await asyncio.gather(burst(alice_socket, from_alice), burst(carol_socket, from_carol))
    inbox = await bob.inbox()
    by_sender: dict[str, list[str]] = {}
    for message in inbox.messages:
        by_sender.setdefault(message.sender, []).append(message.text or "")
    assert by_sender == {
        alice.username: numbered("alice", BURST // 2),
        carol.username: numbered("carol", BURST // 2),
    }


@pytest.mark.parametrize("cluster_options", [UNLIMITED])
async def test_an_online_recipient_gets_a_burst_in_send_order(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob, texts, frames = await burst_to_bob(new_user, "live")
    async with bob.connect() as bob_socket, alice.connect() as alice_socket:
        await burst(alice_socket, frames)
        received = [await bob_socket.receive(within=10) for _ in frames]
    assert [m.text for m in received] == texts
    seqs = [m.seq for m in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("cluster_options", [UNLIMITED])
async def test_a_resend_keeps_its_place(cluster: Cluster, new_user: UserFactory) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    first, second = await sealed(alice, bob.username or "", ["first", "second"])
    async with alice.connect() as socket:
        await socket.send_sealed(first)
        await socket.send_sealed(second)
        await socket.send_sealed(first)  # the same id again: same document, same place
    assert [m.text for m in (await bob.inbox()).messages] == ["first", "second"]


@pytest.mark.parametrize("cluster_options", [UNLIMITED])
async def test_order_holds_across_a_master_restart(
    cluster: Cluster, new_user: UserFactory, cluster_options: dict[str, Any]
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    before = await sealed(alice, bob.username or "", numbered("before", BURST // 2))
    after = await sealed(alice, bob.username or "", numbered("after", BURST // 2))
    async with alice.connect() as socket:
        await burst(socket, before)
    await cluster.master.stop()
    await cluster.start_master(**cluster_options)
    async with alice.connect() as socket:
        await burst(socket, after)
    inbox = await bob.inbox()
    assert [m.text for m in inbox.messages] == numbered("before", BURST // 2) + numbered(
        "after", BURST // 2
    )
