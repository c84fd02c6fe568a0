"""Forged, expired and other users' tokens are refused everywhere."""

from __future__ import annotations

import json

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kuno.client.api import ApiError, KunoClient
from kuno.common.tokens import STORE_SCOPE, TokenSigner, generate_key_pair, load_private_key
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import UserFactory
from tests.support.pouchdb import eventually


@pytest.fixture(scope="module")
def forger() -> TokenSigner:
    """Signs well-formed tokens with a key the master never had."""
    return TokenSigner(load_private_key(generate_key_pair()[0]), audience="kuno", ttl=300)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def status_of(method: str, url: str, token: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, headers=bearer(token)) as response:
            return response.status


async def node_delete_failures(cluster: Cluster) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{cluster.master.url}/metrics") as response:
            text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kuno_master_node_deletes_total" and sample.labels["outcome"] == "failed"
    )


@pytest.mark.parametrize("kind", ["forged", "expired"])
async def test_a_forged_or_expired_token_is_refused_by_master_and_nodes(
    cluster: Cluster,
    new_user: UserFactory,
    forger: TokenSigner,
    signer: TokenSigner,
    kind: str,
) -> None:
    bob = await new_user("bob")
    username = bob.username or ""
    token = forger.sign(username) if kind == "forged" else signer.sign(username, ttl=-60)
    assert await status_of("GET", f"{cluster.master.url}/api/users/{username}/key", token) == 401
    for url in cluster.node_urls:
        assert await status_of("GET", f"{url}/messages/{username}", token) == 401
    impostor = KunoClient(cluster.master.url, cluster.node_urls)
    impostor.use(username, token, bob.keys)  # type: ignore[arg-type]
    try:
        with pytest.raises(ApiError) as refused:
            await impostor.connect().open()
        assert refused.value.status == 401
    finally:
        await impostor.close()


async def test_a_forged_token_in_the_first_frame_closes_the_socket(
    cluster: Cluster, forger: TokenSigner
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{cluster.master.url}/ws") as ws:
            await ws.send_str(json.dumps({"type": "auth", "token": forger.sign("bob")}))
            error = await ws.receive_json(timeout=5)
            closing = await ws.receive(timeout=5)
    assert error == {"type": "error", "id": None, "reason": "the token is invalid or expired"}
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_a_forged_service_token_cannot_store_on_a_node(
    cluster: Cluster, forger: TokenSigner
) -> None:
    token = forger.sign("master", scopes=(STORE_SCOPE,))
    for url in cluster.node_urls:
        assert await status_of("POST", f"{url}/messages", token) == 401


async def test_another_users_token_cannot_read_or_delete_their_messages(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob, mallory = await new_user("alice"), await new_user("bob"), await new_user("mallory")
    async with alice.connect() as alice_socket:
        ack = await alice_socket.send(bob.username or "", "for bob only")
    token = mallory.token or ""
    for url in cluster.node_urls:
        assert await status_of("GET", f"{url}/messages/{bob.username}", token) == 403
        assert await status_of("DELETE", f"{url}/messages/{ack.id}", token) == 403
    # Through the master: mallory's "received" for bob's message deletes nothing.
    failures_before = await node_delete_failures(cluster)

    async def every_node_refused() -> bool:
        return await node_delete_failures(cluster) >= failures_before + 3

    async with mallory.connect() as mallory_socket:
        await mallory_socket.received(ack.id)
        await eventually(every_node_refused, within=10)
    assert cluster.stored_on(ack.id) == [True, True, True]
    assert [m.text for m in (await bob.inbox()).messages] == ["for bob only"]


async def test_the_service_token_cannot_open_a_user_socket(
    cluster: Cluster, master_token: str
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"{cluster.master.url}/ws", headers=bearer(master_token)
        ) as ws:
            closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
