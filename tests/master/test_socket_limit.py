"""KUNO_MAX_WEBSOCKETS: a socket over the master's limit is refused with 503 and a reason,
before the upgrade; a closed socket frees its place. The deployed proxy's own limit is
tests/modules/test_proxy_conf.py (rendered) and bench/sockets.py (10,000 through it)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap

import aiohttp
from aiohttp.test_utils import TestClient

from tests.master.conftest import MasterFactory, bearer, register


def upgrade_headers(token: str) -> dict[str, str]:
    """A WebSocket upgrade request's headers, sent as a plain GET to read the refusal."""
    return bearer(token) | {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }


async def metric(master: TestClient, name: str) -> float:
    text = await (await master.get("/metrics")).text()
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[1])


async def test_a_socket_over_the_limit_is_refused_with_503_and_a_reason(
    start_master: MasterFactory,
) -> None:
    master = await start_master(max_websockets=2)
    token = await register(master, "alice")
    authenticated = await master.ws_connect("/ws", headers=bearer(token))
    assert (await authenticated.receive_json(timeout=5))["type"] == "ready"
    # A socket still waiting for its auth frame holds a place too.
    waiting = await master.ws_connect("/ws")

    refused = await master.get("/ws", headers=upgrade_headers(token))
    assert refused.status == 503
    assert refused.content_type == "application/json"
    assert refused.headers["Retry-After"] == "5"
    assert await refused.json() == {
        "error": "too_many_websockets",
        "reason": "the master holds its maximum of 2 WebSockets; try again in 5 s",
    }
    try:
        await master.ws_connect("/ws", headers=bearer(token))
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 503
    else:
        raise AssertionError("a third socket was accepted")
    assert await metric(master, "kuno_master_websockets_refused_total") == 2
    assert await metric(master, "kuno_master_websockets_limit") == 2

    # The sockets that were open still work, and a closed one frees its place.
    await waiting.send_json({"type": "auth", "token": token})
    assert (await waiting.receive_json(timeout=5))["type"] == "ready"
    await authenticated.close()
    again = await master.ws_connect("/ws", headers=bearer(token))
    assert (await again.receive_json(timeout=5))["type"] == "ready"


async def test_a_refused_first_frame_auth_frees_its_place(start_master: MasterFactory) -> None:
    master = await start_master(max_websockets=1, auth_timeout=0.2)
    token = await register(master, "alice")
    silent = await master.ws_connect("/ws")
    assert (await silent.receive_json(timeout=5))["type"] == "error"  # no auth frame in time
    assert (await silent.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
    ws = await master.ws_connect("/ws", headers=bearer(token))
    assert (await ws.receive_json(timeout=5))["type"] == "ready"


def test_the_limit_stays_within_the_open_files_limit() -> None:
    """A hard open-files limit below KUNO_MAX_WEBSOCKETS + 1024 lowers the limit, so the
    master refuses with 503 before accept() could fail for want of descriptors."""
    script = textwrap.dedent(
        """
        import resource
        from prometheus_client import CollectorRegistry
        from kuno.master.sockets import SocketLimit

        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))
        limit = SocketLimit(12000, CollectorRegistry())
        print(limit.limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        limit = SocketLimit(2000, CollectorRegistry())
        print(limit.limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    # 4096 descriptors, 1024 kept for CouchDB and the nodes; the soft limit raised to the hard.
    assert run.stdout.split("\n")[:2] == ["3072 4096", "2000 4096"], run.stdout + run.stderr
