"""Replication lag of a deployed system: from a write acknowledged by one CouchDB to the
document being readable on every other one.

    .venv/bin/python -m bench.replication_lag [--project kuno] [--messages 600]

Against the containers of one deployment (`deploy.yml`, or a molecule scenario's project),
from this host, over their private Docker network: message documents are written at a
steady rate (open loop) into the first storage node's CouchDB, each as the master would
store it; a continuous `_changes` feed on every other node records when each one arrives.
Runs: 10/s, 100/s, and 100/s with another node's CouchDB restarted mid-run. Prints p50,
p99 and max per run, and the same figures for the origin's own feed (what watching a feed
costs by itself); the target is p99 < 1 s at 100/s. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
ARRIVAL_TIMEOUT = 120.0  # seconds after the last write that a run waits for stragglers


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


@dataclass
class Node:
    name: str
    container: str
    url: str = ""

    def locate(self, network: str) -> None:
        address = docker(
            "inspect",
            "-f",
            f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
            self.container,
        )
        self.url = f"http://{address}:5984"


@dataclass
class Run:
    label: str
    rate: float
    messages: int
    written: dict[str, float] = field(default_factory=dict)  # id → acknowledged at
    arrived: dict[str, dict[str, float]] = field(default_factory=dict)  # node → id → seen at
    errors: int = 0
    restarted: str = ""

    def lags(self, nodes: list[str]) -> list[float]:
        """Per message: until it was on every other node; missing ones count as infinite."""
        lags = []
        for doc_id, acked in self.written.items():
            seen = [self.arrived[node].get(doc_id) for node in nodes]
            lags.append(max(s for s in seen) - acked if all(seen) else float("inf"))
        return lags

    def line(self, nodes: list[str], label: str = "") -> str:
        lags = sorted(self.lags(nodes))
        missing = sum(1 for lag in lags if lag == float("inf"))
        finite = [lag for lag in lags if lag != float("inf")]

        def ms(p: float) -> str:
            if not lags:
                return "   n/a"
            value = lags[min(len(lags) - 1, round(p / 100 * (len(lags) - 1)))]
            return "   inf" if value == float("inf") else f"{value * 1000:6.0f}"

        mean = f"{statistics.fmean(finite) * 1000:6.0f}" if finite else "   n/a"
        return (
            f"{label or self.label:<38} n={len(lags):<5} p50 {ms(50)} ms  p99 {ms(99)} ms  "
            f"max {ms(100)} ms  mean {mean} ms  missing {missing}  write errors {self.errors}"
        )


def auth_header(project: str) -> dict[str, str]:
    password = (REPO / "build" / "secrets" / f"{project}-couchdb-admin").read_text().strip()
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": "application/json"}


def message_doc(run_tag: str, number: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "_id": str(uuid.uuid4()),
        "type": "message",
        "senderId": f"bench-{run_tag}",
        "recipientId": "bench-replication-lag",
        "ciphertext": base64.b64encode(secrets.token_bytes(180)).decode(),
        "nonce": base64.b64encode(secrets.token_bytes(24)).decode(),
        "timestamp": now,
        "expiresAt": now + 3_600_000,
        "bench": number,
    }


async def follow(
    session: aiohttp.ClientSession,
    node: Node,
    network: str,
    headers: dict[str, str],
    seen: dict[str, float],
    stop: asyncio.Event,
) -> None:
    """Records when each document appears on the node; reconnects (from the last sequence)
    when the node goes away, until stop is set."""
    async with session.get(f"{node.url}/messages", headers=headers) as response:
        since = (await response.json())["update_seq"]
    while not stop.is_set():
        try:
            params = {"feed": "continuous", "since": str(since), "heartbeat": "1000"}
            async with session.get(
                f"{node.url}/messages/_changes",
                params=params,
                headers=headers | {"Accept-Encoding": "identity"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=5),
            ) as response:
                async for raw in response.content:
                    now = time.perf_counter()
                    line = raw.strip()
                    if not line:
                        if stop.is_set():
                            return
                        continue
                    change = json.loads(line)
                    if "seq" in change:
                        since = change["seq"]
                        seen.setdefault(change["id"], now)
                    if stop.is_set():
                        return
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            # The node is restarting: its address may change; try again shortly.
            await asyncio.sleep(0.2)
            try:
                node.locate(network)
            except subprocess.CalledProcessError:
                pass


async def one_run(
    run: Run,
    origin: Node,
    others: list[Node],
    network: str,
    headers: dict[str, str],
    restart: Node | None = None,
) -> Run:
    watched = [origin, *others]
    run.arrived = {node.name: {} for node in watched}
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        followers = [
            asyncio.create_task(
                follow(session, node, network, headers, run.arrived[node.name], stop)
            )
            for node in watched
        ]
        await asyncio.sleep(0.5)  # the feeds are open before the first write

        async def write(number: int) -> None:
            doc = message_doc(run.label, number)
            try:
                async with session.put(
                    f"{origin.url}/messages/{doc['_id']}", json=doc, headers=headers
                ) as response:
                    await response.read()
                    if response.status in (201, 202):
                        run.written[doc["_id"]] = time.perf_counter()
                    else:
                        run.errors += 1
            except aiohttp.ClientError:
                run.errors += 1

        writers = []
        started = time.perf_counter()
        restart_task = None
        for number in range(run.messages):
            # Open loop: each write at its time, whether or not the previous one returned.
            delay = started + number / run.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writers.append(asyncio.create_task(write(number)))
            if restart is not None and number == run.messages // 2:
                restart_task = asyncio.create_task(
                    asyncio.to_thread(docker, "restart", "-t", "10", restart.container)
                )
                run.restarted = restart.name
        await asyncio.gather(*writers)
        if restart_task is not None:
            await restart_task
        for _ in range(int(ARRIVAL_TIMEOUT / 0.1)):  # bounded: stragglers count as missing
            if all(set(run.written) <= set(seen) for seen in run.arrived.values()):
                break
            await asyncio.sleep(0.1)
        stop.set()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return run


async def cleanup(
    origin: Node, others: list[Node], headers: dict[str, str], runs: list[Run]
) -> None:
    """Deletes the benchmark's documents on the origin; replication removes them elsewhere."""
    ids = [doc_id for run in runs for doc_id in run.written]
    async with aiohttp.ClientSession() as session:
        for first in range(0, len(ids), 500):
            keys = ids[first : first + 500]
            async with session.post(
                f"{origin.url}/messages/_all_docs", json={"keys": keys}, headers=headers
            ) as response:
                rows = (await response.json())["rows"]
            tombstones = [
                {"_id": row["id"], "_rev": row["value"]["rev"], "_deleted": True}
                for row in rows
                if "value" in row and not row["value"].get("deleted")
            ]
            async with session.post(
                f"{origin.url}/messages/_bulk_docs", json={"docs": tombstones}, headers=headers
            ) as response:
                await response.read()
    del others


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--project",
        default=os.environ.get("KUNO_PROJECT", "kuno"),
        help="kuno_project of the deployment (default: kuno, as make deploy)",
    )
    parser.add_argument("--nodes", default="node1,node2,node3", help="storage nodes, origin first")
    parser.add_argument("--messages", type=int, default=600, help="per run (at least 500)")
    args = parser.parse_args()
    network = f"{args.project}-internal"
    names = args.nodes.split(",")
    nodes = [Node(name, f"{args.project}-couchdb-{name}") for name in names]
    for node in nodes:
        node.locate(network)
    origin, others = nodes[0], nodes[1:]
    headers = auth_header(args.project)
    other_names = [node.name for node in others]
    print(
        f"replication lag, {args.project}: writes into {origin.name}'s CouchDB, "
        f"until readable on {', '.join(other_names)} ({args.messages} messages per run)"
    )
    runs = []
    for label, rate, restart in (
        ("10/s", 10.0, None),
        ("100/s", 100.0, None),
        (f"100/s, {others[-1].name} restarted mid-run", 100.0, others[-1]),
    ):
        run = await one_run(
            Run(label, rate, args.messages), origin, others, network, headers, restart
        )
        runs.append(run)
        print(run.line(other_names), flush=True)
        # The floor of this method: the same feed watching the node that took the write.
        print(run.line([origin.name], "  the origin's own feed (floor)"), flush=True)
    await cleanup(origin, others, headers, runs)


if __name__ == "__main__":
    asyncio.run(main())
