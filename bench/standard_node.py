"""Standard node vs. the raw server it stores on, measured in the same run.

    .venv/bin/python -m bench.standard_node [--duration 10] [--users 1000] [--per-user 50]

POST: throughput and p50/p99 through the node (`POST /messages`) and straight to
pouchdb-server (`POST /db`), with 1 and 32 clients. GET: `GET /messages/{user}`
vs. the same Mango `_find` sent raw, over users*per_user stored messages.
Targets (issue 2): node POST throughput at 32 clients >= 70% of raw; node GET p99
<= 1.5x raw `_find` p99. `--scrape-every 5`: a Prometheus scrapes the node's /metrics
every 5 s meanwhile (bench/prometheus.py). Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.load import LoadResult, closed_loop
from bench.process import CpuMeter, Service
from bench.prometheus import scraping
from kuno.common.tokens import STORE_SCOPE, TokenSigner, generate_key_pair, load_private_key
from kuno.standard.store import RECIPIENT_INDEX, RECIPIENT_SORT
from tests.support.messages import message_body, now_ms
from tests.support.pouchdb import PouchServer, http_json
from tests.support.schema import apply_schema

MAX_REQUESTS = 200_000  # a bound on every load loop besides its duration
GET_PAGE = 100


def node_service(server: PouchServer, key_file: Path, database: str) -> Service:
    """A standard node on `server`'s `database` (BENCH_NODE_PYTHON_ARGS: extra python args),
    the database's schema applied first, as the deployment does before a node starts."""
    apply_schema(server.url, messages=database)
    return Service(
        "kuno.standard",
        {
            "KUNO_NODE_NAME": "bench",
            "KUNO_COUCHDB_URL": server.url,
            "KUNO_COUCHDB_USER": server.user,
            "KUNO_COUCHDB_PASSWORD": server.password,
            "KUNO_DATABASE": database,
            "KUNO_TOKEN_PUBLIC_KEY_FILE": str(key_file),
            "KUNO_SWEEP_INTERVAL": "3600",
        },
        python_args=os.environ.get("BENCH_NODE_PYTHON_ARGS", "").split(),
    )


async def post_load(
    session: aiohttp.ClientSession,
    label: str,
    url: str,
    headers: dict[str, str],
    to_document: bool,
    concurrency: int,
    duration: float,
) -> LoadResult:
    async def post(_: int) -> bool:
        body = message_body(recipient=f"u{_ % 1000}")
        if to_document:
            body = {"_id": body.pop("id"), "type": "message", **body}
        async with session.post(url, json=body, headers=headers) as response:
            await response.read()
            return response.status == 201

    return await closed_loop(label, post, concurrency, duration, MAX_REQUESTS)


async def get_load(
    session: aiohttp.ClientSession,
    label: str,
    request_for_user,
    users: int,
    concurrency: int,
    duration: float,
) -> LoadResult:
    async def get(i: int) -> bool:
        method, url, kwargs = request_for_user(f"u{i * 7919 % users}")
        async with session.request(method, url, **kwargs) as response:
            body = await response.json(content_type=None)
            return response.status == 200 and len(body.get("messages", body.get("docs"))) > 0

    return await closed_loop(label, get, concurrency, duration, MAX_REQUESTS)


def load_messages(server: PouchServer, database: str, users: int, per_user: int) -> None:
    """users*per_user messages straight into the database, in bulk."""
    base = now_ms()
    batch = []
    for n in range(users * per_user):
        body = message_body(recipient=f"u{n % users}", timestamp=base + n, seq=(base + n) * 1000)
        batch.append({"_id": body.pop("id"), "type": "message", **body})
        if len(batch) == 2000:
            status, _ = http_json(
                "POST", server.db_url(database) + "/_bulk_docs", {"docs": batch}, timeout=120
            )
            assert status == 201
            batch = []
    if batch:
        http_json("POST", server.db_url(database) + "/_bulk_docs", {"docs": batch}, timeout=120)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per POST run")
    parser.add_argument("--get-duration", type=float, default=10.0, help="seconds per GET run")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--get-concurrency", type=int, default=8)
    parser.add_argument(
        "--scrape-every", type=float, default=0, help="a Prometheus scrapes the node (s; 0: none)"
    )
    args = parser.parse_args()

    private_pem, public_pem = generate_key_pair()
    signer = TokenSigner(load_private_key(private_pem), audience="kuno", ttl=3600)
    master = {"Authorization": f"Bearer {signer.sign('master', scopes=(STORE_SCOPE,))}"}

    with tempfile.TemporaryDirectory(prefix="kuno-bench-") as tmp:
        key_file = Path(tmp) / "public.pem"
        key_file.write_bytes(public_pem)
        server = PouchServer(Path(tmp) / "couchdb", "bench-couchdb").start()
        node = node_service(server, key_file, "messages")
        results: list[LoadResult] = []
        watched = contextlib.ExitStack()
        try:
            node_url = node.start().url
            server.create_db("raw")
            watched.enter_context(
                scraping({"kuno-standard": [node_url.removeprefix("http://")]}, args.scrape_every)
            )
            # Under node's 5 s keep-alive: after the load (seconds without a request to the
            # server) a pooled connection is never one pouchdb-server has closed.
            connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=2)
            async with aiohttp.ClientSession(connector=connector) as session:
                print(f"# POST, {args.duration:.0f} s each, same pouchdb-server")
                for concurrency in (1, 32):
                    for label, url, headers, raw in (
                        ("raw POST /raw", server.db_url("raw"), server.auth_header, True),
                        ("node POST /messages", node_url + "/messages", master, False),
                    ):
                        meter = CpuMeter(
                            {"pouchdb": [server.pid], "node": [node.pid], "bench": [os.getpid()]}
                        )
                        meter.start()
                        result = await post_load(
                            session, label, url, headers, raw, concurrency, args.duration
                        )
                        results.append(result)
                        print(result.line(), flush=True)
                        per_request = meter.per(len(result.latencies))
                        print(
                            "    CPU per request: "
                            + ", ".join(f"{n} {s * 1000:.2f} ms" for n, s in per_request.items()),
                            flush=True,
                        )

                total = args.users * args.per_user
                print(f"# GET: loading {total} messages over {args.users} users ...", flush=True)
                started = time.perf_counter()
                load_messages(server, "messages", args.users, args.per_user)
                print(f"#   loaded in {time.perf_counter() - started:.1f} s", flush=True)
                user_token = {
                    "Authorization": f"Bearer {signer.sign('master', scopes=(STORE_SCOPE,))}"
                }

                def raw_find(user: str):
                    query = {
                        "selector": {"recipientId": user, "seq": {"$gte": 0}},
                        "sort": RECIPIENT_SORT,
                        "use_index": RECIPIENT_INDEX.use_index,
                        "limit": GET_PAGE + 1,
                        "skip": 0,
                    }
                    kwargs = {"json": query, "headers": server.auth_header}
                    return "POST", server.db_url("messages") + "/_find", kwargs

                def node_get(user: str):
                    return "GET", f"{node_url}/messages/{user}", {"headers": user_token}

                # The first query builds the index over everything loaded: not measured.
                started = time.perf_counter()
                method, url, kwargs = raw_find("u0")
                async with session.request(
                    method, url, timeout=aiohttp.ClientTimeout(600), **kwargs
                ) as r:
                    await r.read()
                print(f"#   index built in {time.perf_counter() - started:.1f} s", flush=True)
                print(f"# GET, {args.get_duration:.0f} s each, c={args.get_concurrency}")
                for label, make in (
                    ("raw POST /messages/_find", raw_find),
                    ("node GET /messages/{user}", node_get),
                ):
                    result = await get_load(
                        session, label, make, args.users, args.get_concurrency, args.get_duration
                    )
                    results.append(result)
                    print(result.line(), flush=True)
        finally:
            watched.close()
            node.stop(timeout=10)
            server.stop()

    raw32, node32 = results[2], results[3]
    raw_get, node_get_result = results[4], results[5]
    post_ratio = node32.rate / raw32.rate
    get_ratio = node_get_result.percentile(99) / raw_get.percentile(99)
    print("# summary")
    print(f"POST throughput node/raw at 32 clients: {post_ratio:.2f} (target >= 0.70)")
    print(f"GET p99 node/raw _find:                 {get_ratio:.2f} (target <= 1.50)")


if __name__ == "__main__":
    asyncio.run(main())
