"""The user id is the name in lower case, whatever case its owner typed (issue 17)."""

from __future__ import annotations

from kuno.client.api import KunoClient
from kuno.client.crypto import KeyPair
from tests.e2e.cluster import Cluster, unique
from tests.e2e.conftest import PASSWORD


async def test_a_name_typed_in_mixed_case_is_one_user_id_end_to_end(cluster: Cluster) -> None:
    """Tokens, senderId/recipientId and the inbox all use the canonical name."""
    typed = {"alice": unique("Alice"), "bob": unique("BoB")}
    clients = {}
    try:
        for who, name in typed.items():
            client = KunoClient(cluster.master.url, cluster.node_urls, node_timeout=2.0)
            clients[who] = client
            await client.register(name, PASSWORD, KeyPair.generate())
            assert client.username == name.lower()
            await client.login(name.upper(), PASSWORD)
            assert client.username == name.lower()
        alice, bob = clients["alice"], clients["bob"]
        async with alice.connect() as socket:
            ack = await socket.send(bob.username, "hello in any case")
        assert ack.stored == 3
        inbox = await bob.inbox()
        assert [(m.sender, m.text) for m in inbox.messages] == [
            (alice.username, "hello in any case")
        ]
    finally:
        for client in clients.values():
            await client.close()
