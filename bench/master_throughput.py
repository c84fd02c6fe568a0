"""The master end to end: send → ack through the fan-out to 3 standard nodes, vs. raw writes.

    .venv/bin/python -m bench.master_throughput [--duration 10] [--senders 32] [--rate 50]

Everything on 127.0.0.1: 3 pouchdb-servers with full-mesh continuous replication of
`messages` and `users`, 3 standard nodes and the master as their own processes
(`python -m kuno.standard`, `python -m kuno.master`), and WebSocket senders here.

1. raw: `senders` clients POST message documents straight to one pouchdb-server;
2. closed loop: `senders` WebSockets, each sends and waits for its ack, for `duration` s;
3. steady: `rate` messages/s spread over 8 WebSockets for `duration` s, send → ack latency.
Targets (issue 3): master msgs/s >= 25% of raw docs/s; steady p99 send → ack <= 100 ms.
Every loop stops after `duration` seconds or MAX_REQUESTS, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.load import LoadResult, closed_loop
from bench.standard_node import start_node
from kuno.client.crypto import KeyPair
from kuno.common.tokens import generate_key_pair
from tests.e2e.cluster import replicate_full_mesh
from tests.support.messages import message_body
from tests.support.pouchdb import PouchServer, free_port, http_json, wait_until

MAX_REQUESTS = 200_000
MESSAGES_DB = "messages"
USERS_DB = "users"
PASSWORD = "bench password"
STEADY_SOCKETS = 8


def start_master(
    servers: list[PouchServer], node_urls: list[str], private_key: Path
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUNO_")}
    env.update(
        KUNO_COUCHDB_URLS=",".join(server.url for server in servers),
        KUNO_STANDARD_NODE_URLS=",".join(node_urls),
        KUNO_TOKEN_PRIVATE_KEY_FILE=str(private_key),
        KUNO_HOST="127.0.0.1",
        KUNO_PORT=str(port),
        KUNO_LOG_LEVEL="warning",
        # The per-connection limit guards production; here the load is the point.
        KUNO_SEND_BURST="100000",
        KUNO_SEND_PER_SECOND="100000",
        KUNO_CLIENT_BURST="1000",
        # Registration is not measured: cheap argon2 so set-up is quick.
        KUNO_PASSWORD_TIME_COST="1",
        KUNO_PASSWORD_MEMORY_KIB="1024",
        KUNO_PASSWORD_PARALLELISM="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "kuno.master"], env=env, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return http_json("GET", url + "/health", timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(answers, timeout=30, interval=0.1)
    return process, url


async def account(session: aiohttp.ClientSession, master: str, username: str) -> str:
    body = {"username": username, "password": PASSWORD, "publicKey": KeyPair.generate().public_b64}
    async with session.post(f"{master}/api/register", json=body) as response:
        assert response.status == 201, await response.text()
    async with session.post(f"{master}/api/login", json=body) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["token"]


def send_frame(recipient: str) -> dict[str, str]:
    return {
        "type": "send",
        "id": str(uuid.uuid4()),
        "to": recipient,
        "ciphertext": base64.b64encode(os.urandom(120)).decode(),
        "nonce": base64.b64encode(os.urandom(24)).decode(),
    }


async def open_sockets(
    session: aiohttp.ClientSession, master: str, tokens: list[str]
) -> list[aiohttp.ClientWebSocketResponse]:
    sockets = []
    for token in tokens:
        ws = await session.ws_connect(f"{master}/ws", headers={"Authorization": f"Bearer {token}"})
        assert (await ws.receive_json(timeout=10))["type"] == "ready"
        sockets.append(ws)
    return sockets


async def raw_writes(
    session: aiohttp.ClientSession, server: PouchServer, concurrency: int, duration: float
) -> LoadResult:
    server.create_db("raw")
    url = server.db_url("raw")

    async def post(_: int) -> bool:
        body = message_body()
        document = {"_id": body.pop("id"), "type": "message", **body}
        async with session.post(url, json=document) as response:
            await response.read()
            return response.status == 201

    return await closed_loop("raw pouchdb-server POST", post, concurrency, duration, MAX_REQUESTS)


async def closed_loop_sends(
    sockets: list[aiohttp.ClientWebSocketResponse], recipient: str, duration: float
) -> LoadResult:
    """One message in flight per socket: send, wait for the ack, send the next."""
    free = asyncio.Queue[aiohttp.ClientWebSocketResponse]()
    for ws in sockets:
        free.put_nowait(ws)

    async def send(_: int) -> bool:
        ws = await free.get()
        try:
            frame = send_frame(recipient)
            await ws.send_str(json.dumps(frame))
            reply = await ws.receive_json(timeout=30)
            return reply.get("type") == "ack" and reply.get("stored") == 3
        finally:
            free.put_nowait(ws)

    return await closed_loop(
        "master send→ack (closed loop)", send, len(sockets), duration, MAX_REQUESTS
    )


async def steady_sends(
    sockets: list[aiohttp.ClientWebSocketResponse], recipient: str, rate: float, duration: float
) -> LoadResult:
    """Open loop: a send every 1/rate s, whatever the acks do; latency per id."""
    result = LoadResult(f"master send→ack at {rate:g}/s", len(sockets))
    sent_at: dict[str, float] = {}
    total = min(int(rate * duration), MAX_REQUESTS)
    done = asyncio.Event()

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            reply = json.loads(message.data)
            started = sent_at.pop(reply.get("id"), None)
            if started is None:
                continue
            if reply["type"] == "ack" and reply["stored"] == 3:
                result.latencies.append(time.perf_counter() - started)
            else:
                result.errors += 1
            if len(result.latencies) + result.errors == total:
                done.set()

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    started = time.perf_counter()
    for n in range(total):
        # Absolute schedule: a slow iteration does not push the later ones back.
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        frame = send_frame(recipient)
        sent_at[frame["id"]] = time.perf_counter()
        await sockets[n % len(sockets)].send_str(json.dumps(frame))
    try:
        await asyncio.wait_for(done.wait(), timeout=30)
    except TimeoutError:
        result.errors += len(sent_at)
    result.elapsed = time.perf_counter() - started
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument(
        "--no-replication",
        action="store_true",
        help="skip the full mesh (to see what replication costs; not the measured setup)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kuno-bench-") as tmp:
        root = Path(tmp)
        private_pem, public_pem = generate_key_pair()
        (root / "private.pem").write_bytes(private_pem)
        (root / "public.pem").write_bytes(public_pem)
        servers = [PouchServer(root / f"couchdb-{i}", f"couchdb-{i}") for i in (1, 2, 3)]
        processes: list[subprocess.Popen] = []
        try:
            for server in servers:
                server.start()
            if args.no_replication:
                for server in servers:
                    server.create_db(USERS_DB)
            else:
                replicate_full_mesh(servers, [MESSAGES_DB, USERS_DB])
            node_urls = []
            for server in servers:
                process, url = start_node(server, root / "public.pem", MESSAGES_DB)
                processes.append(process)
                node_urls.append(url)
            master_process, master = start_master(servers, node_urls, root / "private.pem")
            processes.append(master_process)

            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                raw = await raw_writes(session, servers[0], args.senders, args.duration)
                print(raw.line(), flush=True)

                recipient = "sink"
                await account(session, master, recipient)  # offline: every message is stored
                tokens = [await account(session, master, f"sender{i}") for i in range(args.senders)]
                sockets = await open_sockets(session, master, tokens)
                closed = await closed_loop_sends(sockets, recipient, args.duration)
                print(closed.line(), flush=True)

                await asyncio.sleep(2)  # let replication catch up before the steady run
                steady = await steady_sends(
                    sockets[:STEADY_SOCKETS], recipient, args.rate, args.duration
                )
                print(steady.line(), flush=True)
                for ws in sockets:
                    await ws.close()
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
            for server in servers:
                server.stop()

    ratio = closed.rate / raw.rate if raw.rate else float("nan")
    print("# summary")
    print(
        f"master msgs/s vs raw single-server docs/s at {args.senders}: {ratio:.2f} (target >= 0.25)"
    )
    print(f"steady {args.rate:g}/s p99 send→ack: {steady.percentile(99):.1f} ms (target <= 100 ms)")


if __name__ == "__main__":
    asyncio.run(main())
