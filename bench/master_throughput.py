"""The master end to end: send → ack through the fan-out to 3 standard nodes, vs. raw writes.

    .venv/bin/python -m bench.master_throughput [--duration 10] [--senders 32] [--rate 50]
        [--in-flight 2] [--replication-option KEY=JSON ...] [--no-replication]
        [--scrape-every 5]

Everything on 127.0.0.1: 3 pouchdb-servers with full-mesh continuous replication of
`messages` and `users`, 3 standard nodes and the master as their own processes
(`python -m kuno.standard`, `python -m kuno.master`), and WebSocket senders here.

1. raw: `senders` clients POST message documents straight to one pouchdb-server;
2. raw fan-out: `senders` clients PUT each document straight to all 3 servers while they
   replicate: the storage work of one message without the master or the nodes;
3. closed loop: `senders` WebSockets, each sends and waits for its ack, for `duration` s;
4. steady: `rate` messages/s (open loop, absolute schedule) as raw fan-out, as POSTs to
   the 3 standard nodes (the fan-out without the master) and through the master over 8
   WebSockets, send → ack latency.
Replication is let to catch up (equal doc counts) between the runs. The master coalesces
each node's stores into batches (`--in-flight` requests per node); the mean batch size
comes from its /metrics. `--replication-option` adds a field to every replication
document (e.g. `checkpoint='"target"'`) to measure what it changes; NODE_OPTIONS in the
environment reaches the pouchdb-servers (e.g. a --require preload). Load averages are
printed at the start and the end. `--scrape-every 5`: a Prometheus scrapes the master's and
the nodes' /metrics every 5 s meanwhile (bench/prometheus.py).
Targets (issue 3): master msgs/s >= 25% of raw docs/s; steady p99 send → ack <= 100 ms.
Every loop stops after `duration` seconds or MAX_REQUESTS, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.load import LoadResult, closed_loop
from bench.process import CpuMeter, Service, stop_all
from bench.prometheus import scraping
from bench.standard_node import node_service
from kuno.client.crypto import KeyPair
from kuno.common.tokens import STORE_SCOPE, TokenSigner, generate_key_pair, load_private_key
from tests.e2e.cluster import replicate_full_mesh
from tests.support.messages import message_body
from tests.support.pouchdb import PouchServer, http_json, wait_until

MAX_REQUESTS = 200_000
MESSAGES_DB = "messages"
USERS_DB = "users"
PASSWORD = "bench password"
STEADY_SOCKETS = 8
NODES = 3


def master_service(
    servers: list[PouchServer], node_urls: list[str], private_key: Path, in_flight: int
) -> Service:
    return Service(
        "kuno.master",
        {
            "KUNO_STORE_BATCHES_IN_FLIGHT": str(in_flight),
            "KUNO_COUCHDB_URLS": ",".join(server.url for server in servers),
            "KUNO_COUCHDB_USER": servers[0].user,
            "KUNO_COUCHDB_PASSWORD": servers[0].password,
            "KUNO_STANDARD_NODE_URLS": ",".join(node_urls),
            "KUNO_TOKEN_PRIVATE_KEY_FILE": str(private_key),
            # The per-connection limit guards production; here the load is the point.
            "KUNO_SEND_BURST": "100000",
            "KUNO_SEND_PER_SECOND": "100000",
            "KUNO_CLIENT_BURST": "1000",
            # Registration is not measured: cheap argon2 so set-up is quick.
            "KUNO_PASSWORD_TIME_COST": "1",
            "KUNO_PASSWORD_MEMORY_KIB": "1024",
            "KUNO_PASSWORD_PARALLELISM": "1",
        },
    )


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
        async with session.post(url, json=document, headers=server.auth_header) as response:
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
            return reply.get("type") == "ack" and reply.get("stored") == NODES
        finally:
            free.put_nowait(ws)

    return await closed_loop(
        "master send→ack (closed loop)", send, len(sockets), duration, MAX_REQUESTS
    )


class Acks:
    """Reads every socket; resolves the future of each id with its ack or error frame."""

    def __init__(self, sockets: list[aiohttp.ClientWebSocketResponse]) -> None:
        self.sockets = sockets
        self.waiting: dict[str, asyncio.Future[dict]] = {}
        self.readers = [asyncio.create_task(self._read(ws)) for ws in sockets]

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            reply = json.loads(message.data)
            future = self.waiting.pop(reply.get("id"), None)
            if future is not None and not future.done():
                future.set_result(reply)

    async def send(self, n: int, recipient: str) -> bool:
        frame = send_frame(recipient)
        future = self.waiting[frame["id"]] = asyncio.get_running_loop().create_future()
        await self.sockets[n % len(self.sockets)].send_str(json.dumps(frame))
        reply = await asyncio.wait_for(future, timeout=30)
        return reply["type"] == "ack" and reply["stored"] == NODES

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def open_loop(
    label: str, request: Callable[[int], Awaitable[bool]], rate: float, duration: float
) -> LoadResult:
    """A request every 1/rate s on an absolute schedule, whatever the earlier ones do."""
    result = LoadResult(label, 0)
    total = min(int(rate * duration), MAX_REQUESTS)

    async def timed(n: int) -> None:
        started = time.perf_counter()
        try:
            ok = await request(n)
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        if ok:
            result.latencies.append(time.perf_counter() - started)
        else:
            result.errors += 1

    tasks = []
    started = time.perf_counter()
    for n in range(total):
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(timed(n)))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - started
    result.concurrency = max(1, round(rate))
    return result


def raw_fan_out(
    session: aiohttp.ClientSession, servers: list[PouchServer]
) -> Callable[[int], Awaitable[bool]]:
    """What the master's fan-out amounts to without master or nodes: one PUT per server."""

    async def put(server: PouchServer, document: dict) -> bool:
        url = f"{server.db_url(MESSAGES_DB)}/{document['_id']}"
        async with session.put(url, json=document, headers=server.auth_header) as response:
            await response.read()
            # 409: replication from a server that stored it first got there before this PUT.
            return response.status in (201, 409)

    async def fan_out(_: int) -> bool:
        body = message_body(recipient="raw")
        document = {"_id": body.pop("id"), "type": "message", **body}
        return all(await asyncio.gather(*(put(server, document) for server in servers)))

    return fan_out


def node_fan_out(
    session: aiohttp.ClientSession, node_urls: list[str], private_pem: bytes
) -> Callable[[int], Awaitable[bool]]:
    """The master's fan-out without the master: POST /messages to every standard node."""
    signer = TokenSigner(load_private_key(private_pem), "kuno", 3600)
    headers = {"Authorization": f"Bearer {signer.sign('master', scopes=(STORE_SCOPE,))}"}

    async def post(url: str, body: dict) -> bool:
        async with session.post(f"{url}/messages", json=body, headers=headers) as response:
            await response.read()
            # 200: replication from a node that stored it first got there before this POST.
            return response.status in (200, 201)

    async def fan_out(_: int) -> bool:
        body = message_body(recipient="nodes")
        return all(await asyncio.gather(*(post(url, body) for url in node_urls)))

    return fan_out


def replicate_with_options(
    servers: list[PouchServer], databases: list[str], options: dict[str, object]
) -> None:
    """The full mesh with extra fields in every replication document (to measure them)."""
    if not options:
        replicate_full_mesh(servers, databases)
        return
    for db in databases:
        for server in servers:
            server.create_db(db)
        for target, source in itertools.permutations(servers, 2):
            doc = {
                "source": source.authenticated_db_url(db),
                "target": target.authenticated_db_url(db),
                "continuous": True,
            }
            status, body = http_json(
                "PUT", f"{target.url}/_replicator/{db}-from-{source.port}", doc | options
            )
            assert status in (201, 202), body


def replication_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError('KEY=JSON, e.g. checkpoint="target" or batch_size=500')
    return key, json.loads(value)


async def batch_sizes(session: aiohttp.ClientSession, master: str) -> str:
    """Mean messages per batch request to each node so far, from the master's /metrics."""
    async with session.get(f"{master}/metrics") as response:
        text = await response.text()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kuno_master_store_batch_size_sum":
                sums[sample.labels["node"]] = sample.value
            elif sample.name == "kuno_master_store_batch_size_count":
                counts[sample.labels["node"]] = sample.value
    return "mean batch per node: " + ", ".join(
        f"{sums[node] / counts[node]:.1f} ({int(counts[node])} requests)"
        for node in sorted(counts)
        if counts[node]
    )


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def wait_for_replication(servers: list[PouchServer]) -> None:
    """Until every server holds the same number of messages: the mesh has caught up."""

    def counts() -> set[int]:
        return {http_json("GET", server.db_url(MESSAGES_DB))[1]["doc_count"] for server in servers}

    wait_until(lambda: len(counts()) == 1, timeout=60, interval=0.5)


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
    parser.add_argument(
        "--replication-option",
        type=replication_option,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="an extra field in every replication document, e.g. checkpoint='\"target\"'",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=2,
        help="the master's batch requests in flight per node (KUNO_STORE_BATCHES_IN_FLIGHT)",
    )
    parser.add_argument(
        "--scrape-every",
        type=float,
        default=0,
        help="a Prometheus scrapes the master and the nodes (s; 0: none)",
    )
    args = parser.parse_args()
    print(f"# start: {load()}; node options {os.environ.get('NODE_OPTIONS', '-')}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kuno-bench-") as tmp:
        root = Path(tmp)
        private_pem, public_pem = generate_key_pair()
        (root / "private.pem").write_bytes(private_pem)
        (root / "public.pem").write_bytes(public_pem)
        servers = [PouchServer(root / f"couchdb-{i}", f"couchdb-{i}") for i in range(1, NODES + 1)]
        services: list[Service] = []
        watched = contextlib.ExitStack()
        try:
            for server in servers:
                server.start()
            if args.no_replication:
                for server in servers:
                    server.create_db(USERS_DB)
            else:
                replicate_with_options(
                    servers, [MESSAGES_DB, USERS_DB], dict(args.replication_option)
                )
            # Each in the list before it starts: stopped whatever happens next.
            for server in servers:
                services.append(node_service(server, root / "public.pem", MESSAGES_DB))
                services[-1].start()
            node_urls = [service.url for service in services]
            master_app = master_service(servers, node_urls, root / "private.pem", args.in_flight)
            services.append(master_app)
            master = master_app.start().url
            watched.enter_context(
                scraping(
                    {
                        "kuno-master": [master.removeprefix("http://")],
                        "kuno-standard": [url.removeprefix("http://") for url in node_urls],
                    },
                    args.scrape_every,
                )
            )

            # Under node's 5 s keep-alive: a pooled connection is never one the server closed.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2)
            async with aiohttp.ClientSession(connector=connector) as session:
                results = [await raw_writes(session, servers[0], args.senders, args.duration)]
                print(results[-1].line(), flush=True)
                fan_out = raw_fan_out(session, servers)
                results.append(
                    await closed_loop(
                        "raw fan-out PUT to all 3",
                        fan_out,
                        args.senders,
                        args.duration,
                        MAX_REQUESTS,
                    )
                )
                print(results[-1].line(), flush=True)
                wait_for_replication(servers)

                recipient = "sink"
                await account(session, master, recipient)  # offline: every message is stored
                tokens = [await account(session, master, f"sender{i}") for i in range(args.senders)]
                sockets = await open_sockets(session, master, tokens)
                meter = CpuMeter(
                    {
                        "master": [master_app.pid],
                        "3 standard nodes": [service.pid for service in services[:NODES]],
                        "3 pouchdb-servers": [s._process.pid for s in servers if s._process],
                    }
                )
                meter.start()
                results.append(await closed_loop_sends(sockets, recipient, args.duration))
                print(results[-1].line(), flush=True)
                wait_for_replication(servers)
                print("  " + meter.per_message(len(results[-1].latencies)), flush=True)
                print("  " + await batch_sizes(session, master), flush=True)

                meter.start()
                results.append(
                    await open_loop(
                        f"raw fan-out at {args.rate:g}/s", fan_out, args.rate, args.duration
                    )
                )
                print(results[-1].line(), flush=True)
                wait_for_replication(servers)
                print("  " + meter.per_message(len(results[-1].latencies)), flush=True)
                results.append(
                    await open_loop(
                        f"standard nodes fan-out at {args.rate:g}/s",
                        node_fan_out(session, node_urls, private_pem),
                        args.rate,
                        args.duration,
                    )
                )
                print(results[-1].line(), flush=True)
                wait_for_replication(servers)
                acks = Acks(sockets[:STEADY_SOCKETS])
                meter.start()
                results.append(
                    await open_loop(
                        f"master send→ack at {args.rate:g}/s",
                        lambda n: acks.send(n, recipient),
                        args.rate,
                        args.duration,
                    )
                )
                print(results[-1].line(), flush=True)
                wait_for_replication(servers)
                print("  " + meter.per_message(len(results[-1].latencies)), flush=True)
                print("  " + await batch_sizes(session, master) + " (closed loop and steady)")
                await acks.close()
                for ws in sockets:
                    await ws.close()
        finally:
            watched.close()
            stop_all(services, timeout=15)
            for server in servers:
                server.stop()

    raw, fan_out_result, closed, steady_raw, steady_nodes, steady = results
    print(f"# summary (end: {load()})")
    print(
        f"master msgs/s / raw single-server docs/s at {args.senders}: "
        f"{closed.rate / raw.rate:.2f} (target >= 0.25)"
    )
    print(
        f"master msgs/s / raw 3-server fan-out msgs/s (replicating) at {args.senders}: "
        f"{closed.rate / fan_out_result.rate:.2f}"
    )
    print(
        f"raw 3-server fan-out msgs/s / raw single-server docs/s (the storage ceiling): "
        f"{fan_out_result.rate / raw.rate:.2f}"
    )
    print(
        f"steady {args.rate:g}/s p99 send→ack: {steady.percentile(99):.1f} ms (target <= 100 ms); "
        f"at the same rate p99 of raw fan-out {steady_raw.percentile(99):.1f} ms, "
        f"of the standard nodes' fan-out {steady_nodes.percentile(99):.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
