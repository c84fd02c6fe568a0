"""The deployed system against the seed's scenarios 1, 2, 3 and 5 (DESIGN.md), on the
session's deployment as tests/deploy/test_deploy.py left it (release rolled back to the
first, storage disabled and restored) or, run alone, as a cold deploy makes it.

Every message a test sends is deleted before it ends: the system is left as it was.
"""

from __future__ import annotations

import json
import time

import pytest

from kuno.client.api import KunoClient
from tests.deploy.conftest import Deployment, docker
from tests.support.system import stored_message, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def system(proxied: Deployment) -> Deployment:
    return proxied


def test_every_container_runs_and_docker_reports_it_healthy(system: Deployment) -> None:
    for name in system.containers:
        assert system.inspect(name)["State"]["Running"], name
        # Docker's own check runs every 15 s: a container just started may still be "starting".
        wait_until(
            lambda name=name: system.inspect(name)["State"]["Health"]["Status"] == "healthy",
            within=90,
            what=f"{name} healthy",
            every=1,
        )


def test_couchdb_is_reachable_only_on_the_private_network(system: Deployment) -> None:
    network = json.loads(docker("network", "inspect", system.network))[0]
    assert network["Internal"] is True
    for node in system.nodes:
        spec = system.inspect(system.container("couchdb", node))
        assert not spec["HostConfig"]["PortBindings"], spec["HostConfig"]["PortBindings"]
        assert not spec["NetworkSettings"]["Ports"] or not any(
            spec["NetworkSettings"]["Ports"].values()
        )
        assert list(spec["NetworkSettings"]["Networks"]) == [system.network]
    # Only the proxy publishes a port, and only on the loopback address.
    published = {
        name: system.inspect(name)["HostConfig"]["PortBindings"] or {} for name in system.containers
    }
    assert {name for name, ports in published.items() if ports} == {system.container("proxy")}
    bindings = published[system.container("proxy")]["80/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(system.proxy_port)}]


def test_every_node_pulls_every_database_from_every_other(system: Deployment) -> None:
    for node in system.nodes:
        assert system.replications_running(node), (node, system.replications(node))


async def test_scenario_1_online_delivery_over_the_websocket_stored_on_every_node(
    system: Deployment,
) -> None:
    async def scene(alice: KunoClient, bob: KunoClient) -> None:
        async with bob.connect() as bob_socket, alice.connect() as alice_socket:
            sent = time.monotonic()
            ack = await alice_socket.send(bob.username, "hello, online bob")
            message = await bob_socket.receive(within=5)
            assert message.text == "hello, online bob"
            assert message.id == ack.id
            assert message.sender == alice.username
            assert time.monotonic() - sent < 5
            assert ack.delivered
            # The ack comes after the fan-out: stored on all N nodes already.
            assert (ack.stored, ack.nodes) == (len(system.nodes), len(system.nodes))
            for node in system.nodes:
                assert system.live_leaves(node, ack.id) == 1, node
            # bob's "received" deletes it from every node.
            await bob_socket.received(ack.id)
            for node in system.nodes:
                wait_until(
                    lambda node=node: system.live_leaves(node, ack.id) == 0,
                    within=15,
                    what=f"{ack.id} deleted on {node} after received",
                )

    await system.with_users(scene)


async def test_scenarios_2_and_3_offline_storage_then_retrieval_empties_every_node(
    system: Deployment,
) -> None:
    texts = [f"offline message {number}" for number in range(3)]

    async def scene(alice: KunoClient, bob: KunoClient) -> None:
        # 2. bob is offline: each message is acknowledged as stored on all N nodes.
        async with alice.connect() as alice_socket:
            acks = [await alice_socket.send(bob.username, text) for text in texts]
        for ack in acks:
            assert not ack.delivered
            assert (ack.stored, ack.nodes) == (len(system.nodes), len(system.nodes))
            for node in system.nodes:
                assert ack.id in system.message_ids(node), (node, ack.id)

        # 3. bob fetches from every node, dedupes, decrypts (oldest first), deletes.
        inbox = await bob.inbox()
        assert [m.text for m in inbox.messages] == texts
        assert not inbox.undecryptable
        assert sorted(inbox.nodes_answered) == sorted(system.node_urls)
        assert inbox.deleted == {ack.id: len(system.nodes) for ack in acks}
        # Afterwards every node returns an empty list and holds none of them.
        await system.assert_nothing_left_for(bob)
        for node in system.nodes:
            for ack in acks:
                assert system.live_leaves(node, ack.id) == 0, (node, ack.id)

    await system.with_users(scene)


async def test_scenario_5_an_expired_message_is_never_returned_and_is_deleted(
    system: Deployment,
) -> None:
    async def scene(alice: KunoClient, bob: KunoClient) -> None:
        # A message whose 30 days are over: written on every node as the master stores it,
        # the same body everywhere, with expiresAt in the past.
        sealed = await alice.seal(bob.username, "long expired")
        now = int(time.time() * 1000)
        expired = stored_message(
            sealed, alice.username, bob.username, now - 31 * 86_400_000, now - 86_400_000
        )
        for node in system.nodes:
            system.put_message(node, expired)
        async with alice.connect() as alice_socket:
            live = await alice_socket.send(bob.username, "still fresh")

        inbox = await bob.fetch_inbox()
        assert [m.text for m in inbox.messages] == ["still fresh"]
        assert sealed.id not in inbox.ids
        # Every node's read found it expired and deleted it.
        for node in system.nodes:
            wait_until(
                lambda node=node: system.live_leaves(node, sealed.id) == 0,
                within=15,
                what=f"expired {sealed.id} deleted on {node}",
            )
        await bob.delete_everywhere([live.id])

    await system.with_users(scene)
