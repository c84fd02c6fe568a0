"""A WebSocket ends with its token (issue 14.4): the master closes it with 4401 at the
token's expiry unless the client refreshed it on the socket; POST /api/refresh issues
fresh tokens without the password, for at most the session's maximum age."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from kuno.client.api import ApiError, KunoError, SendError
from kuno.common.protocol import TOKEN_EXPIRED_CLOSE
from tests.e2e.cluster import Cluster, unique
from tests.e2e.conftest import PASSWORD, UserFactory
from tests.e2e.test_cli import Kuno

TTL = 3  # seconds: exp is whole seconds, so a token lives 2-3 s
SHORT_TOKENS = {"token_ttl": float(TTL)}


async def closed_within(socket, seconds: float) -> int | None:
    """The close code once the master closed the socket, within `seconds`."""
    with pytest.raises(KunoError):
        await socket.receive(within=seconds)
    return socket.close_code


@pytest.mark.parametrize("cluster_options", [SHORT_TOKENS])
async def test_a_socket_is_closed_with_4401_when_its_token_expires(
    cluster: Cluster, new_user: UserFactory
) -> None:
    bob = await new_user("bob")
    async with bob.connect() as socket:
        started = time.monotonic()
        assert await closed_within(socket, TTL + 3) == TOKEN_EXPIRED_CLOSE
        assert time.monotonic() - started <= TTL + 1


@pytest.mark.parametrize("cluster_options", [SHORT_TOKENS])
async def test_a_socket_refreshed_on_the_way_outlives_its_first_token(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    first_expiry = bob.token_expires()
    async with bob.connect() as bob_socket, alice.connect() as alice_socket:
        # Refreshed three times, a second before each token would end: open 3 lifetimes.
        for _ in range(3):
            await asyncio.sleep(max(bob.token_expires() - time.time() - 1.0, 0))
            ends = await bob_socket.refresh()
            assert ends == int(bob.token_expires() * 1000)
            await alice_socket.refresh()
        assert time.time() > first_expiry + 1
        ack = await alice_socket.send(bob.username or "", "still here")
        assert ack.delivered
        assert (await bob_socket.receive(within=5)).text == "still here"
        # No more refreshes: closed at the last token's expiry.
        assert await closed_within(bob_socket, TTL + 3) == TOKEN_EXPIRED_CLOSE


@pytest.mark.parametrize("cluster_options", [SHORT_TOKENS])
async def test_another_users_token_does_not_refresh_a_socket(
    cluster: Cluster, new_user: UserFactory
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    async with bob.connect() as socket:
        socket.client = alice  # alice's fresh token, sent on bob's socket
        with pytest.raises(SendError, match="not this socket's user's"):
            await socket.refresh()
        assert await closed_within(socket, TTL + 3) == TOKEN_EXPIRED_CLOSE


@pytest.mark.parametrize("cluster_options", [{"token_ttl": 3.0, "session_max_age": 4.0}])
async def test_refreshes_end_with_the_session(cluster: Cluster, new_user: UserFactory) -> None:
    bob = await new_user("bob")
    login_token = bob.token
    await bob.refresh()
    assert bob.token != login_token
    # Never past the login plus session_max_age, however often refreshed.
    await asyncio.sleep(4.5)
    with pytest.raises(ApiError) as refused:
        await bob.refresh()
    assert (refused.value.status, refused.value.error) in {
        (401, "session_expired"),
        (401, "unauthorized"),  # the last token had already expired
    }


async def test_an_expired_token_is_not_refreshed(cluster: Cluster, new_user: UserFactory) -> None:
    bob = await new_user("bob")
    bob.token = "not-a-token"
    with pytest.raises(ApiError) as refused:
        await bob.refresh()
    assert refused.value.status == 401


@pytest.mark.parametrize("cluster_options", [SHORT_TOKENS])
async def test_kuno_listen_refreshes_and_stays_connected_over_many_token_lifetimes(
    cluster: Cluster, new_user: UserFactory, tmp_path: Path
) -> None:
    bob_name = unique("bob")
    bob = Kuno(cluster, tmp_path / "bob")
    await bob.run("register", bob_name, "--password-stdin", stdin=PASSWORD)
    token_file = next(path for path in (tmp_path / "bob").iterdir() if "token" in path.name)
    first_token = token_file.read_text()
    listener = await bob.listen()
    try:
        assert listener.stderr is not None and listener.stdout is not None
        await asyncio.sleep(4 * TTL)  # four lifetimes of a token
        assert listener.returncode is None, await listener.stderr.read()
        # A sender in this process: a `kuno send` process may start slower than 3 s.
        alice = await new_user("alice")
        async with alice.connect() as socket:
            assert (await socket.send(bob_name, "after many tokens")).delivered
        shown = await asyncio.wait_for(listener.stdout.readline(), timeout=15)
        assert f"{alice.username}: after many tokens" in shown.decode()
        # The listener saved each refreshed token: the next command needs no password.
        assert token_file.read_text() != first_token
        code, _, err = await bob.run("inbox")
        assert code == 0, err
    finally:
        if listener.returncode is None:
            os.kill(listener.pid, signal.SIGINT)
        try:
            await asyncio.wait_for(listener.wait(), timeout=10)
        except TimeoutError:
            listener.kill()
            await listener.communicate()
