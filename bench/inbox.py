"""`kuno inbox` for a thousand stored messages vs. the raw work on the same servers.

    .venv/bin/python -m bench.inbox [--messages 1000] [--rounds 3] [--nodes 3]

Three pouchdb-servers, a standard node on each and a master, every one a process of its
own on 127.0.0.1. Each round stores `--messages` sealed messages for one recipient on every
node (as the master's fan-out does), then times, in turn:

- `kuno inbox` (the command, a process: start-up, list, decrypt, show, delete);
- KunoClient.inbox() in this process (the same work without the interpreter's start-up);
- raw: on every server at once, Mango `_find` pages of the same size on the recipient
  index, then `_bulk_docs` tombstones with the revisions they returned.

Targets (issue 14.3): `kuno inbox` <= 1.5x raw and <= 2 s. Every loop is bounded by
`--rounds`; the servers stop at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.master_throughput import master_service
from bench.process import Service, stop_all
from bench.standard_node import node_service
from kuno.client.api import PAGE_LIMIT, KunoClient
from kuno.client.crypto import KeyPair
from kuno.client.profile import Profile
from kuno.common.messages import MAX_SEQ
from kuno.common.tokens import STORE_SCOPE, TokenSigner, generate_key_pair, load_private_key
from kuno.master.routing import SendOrder
from kuno.standard.store import RECIPIENT_INDEX, RECIPIENT_SORT
from tests.support.messages import sealed_bodies
from tests.support.pouchdb import PouchServer
from tests.support.schema import apply_schema

PASSWORD = "bench password"
STORE_BATCH = 100


async def store(
    session: aiohttp.ClientSession, node_urls: list[str], token: str, bodies: list[dict]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    for url in node_urls:
        for start in range(0, len(bodies), STORE_BATCH):
            chunk = {"messages": bodies[start : start + STORE_BATCH]}
            async with session.post(f"{url}/messages/batch", json=chunk, headers=headers) as r:
                assert r.status == 200, await r.text()


async def raw_inbox(session: aiohttp.ClientSession, server: PouchServer, user: str) -> int:
    """What `kuno inbox` asks of one node, straight to its CouchDB: the pages, then the
    tombstones page by page. Returns how many were deleted."""
    database = server.db_url("messages")
    headers = server.auth_header
    docs: list[dict] = []
    after = 0
    while True:
        # From the last seq seen on ($gte: pouchdb-server's $gt with $lte on the index
        # missed a row here), that row dropped: the seqs of one recipient are distinct.
        query = {
            "selector": {"recipientId": user, "seq": {"$gte": after, "$lte": MAX_SEQ}},
            "sort": RECIPIENT_SORT,
            "use_index": RECIPIENT_INDEX.use_index,
            "limit": PAGE_LIMIT,
        }
        async with session.post(f"{database}/_find", json=query, headers=headers) as response:
            rows = (await response.json(content_type=None))["docs"]
        page = [row for row in rows if row["seq"] != after]
        docs += page
        if len(rows) < PAGE_LIMIT:
            break
        after = rows[-1]["seq"]
    deleted = 0
    for start in range(0, len(docs), PAGE_LIMIT):
        tombstones = [
            {"_id": d["_id"], "_rev": d["_rev"], "_deleted": True}
            for d in docs[start : start + PAGE_LIMIT]
        ]
        async with session.post(
            f"{database}/_bulk_docs", json={"docs": tombstones}, headers=headers
        ) as response:
            results = await response.json(content_type=None)
            deleted += sum("error" not in r for r in results)
    return deleted


def run_cli(config_dir: Path) -> tuple[float, str, str]:
    env = {**os.environ, "KUNO_CONFIG_DIR": str(config_dir)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kuno.client", "inbox"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return time.perf_counter() - started, done.stdout, done.stderr


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()

    private_pem, public_pem = generate_key_pair()
    signer = TokenSigner(load_private_key(private_pem), audience="kuno", ttl=3600)
    master_token = signer.sign("master", scopes=(STORE_SCOPE,))
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="kuno-bench-") as tmp:
        public_key, private_key = Path(tmp) / "public.pem", Path(tmp) / "private.pem"
        public_key.write_bytes(public_pem)
        private_key.write_bytes(private_pem)
        private_key.chmod(0o600)
        servers = [
            PouchServer(Path(tmp) / f"couchdb{n}", f"bench-couchdb{n}").start()
            for n in range(args.nodes)
        ]
        try:
            # Each in the list before it starts: stopped whatever happens next.
            for server in servers:
                services.append(node_service(server, public_key, "messages"))
                services[-1].start()
            node_urls = [service.url for service in services]
            apply_schema(servers[0].url, users="users")  # as the deployment does
            services.append(master_service(servers[:1], node_urls, private_key, in_flight=2))
            master_url = services[-1].start().url
            async with (
                aiohttp.ClientSession() as session,
                KunoClient(master_url, node_urls) as alice,
                KunoClient(master_url, node_urls) as bob,
            ):
                await alice.register("alice", PASSWORD, KeyPair.generate())
                await alice.login("alice", PASSWORD)
                bob_keys = KeyPair.generate()
                await bob.register("bob", PASSWORD, bob_keys)
                await bob.login("bob", PASSWORD)
                config_dir = Path(tmp) / "bob"
                profile = Profile(config_dir, master_url, node_urls, "bob")
                profile.save()
                profile.save_key("bob", bob_keys)
                order = SendOrder()
                times: dict[str, list[float]] = {"kuno inbox": [], "inbox()": [], "raw": []}
                print(
                    f"# {args.messages} messages, {args.nodes} nodes, pages of {PAGE_LIMIT}; "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                for round_number in range(args.rounds):
                    # The command, as a user runs it (a token of its own, saved).
                    bodies = await sealed_bodies(alice, "bob", order, args.messages)
                    await store(session, node_urls, master_token, bodies)
                    profile.save_token(await bob.login("bob", PASSWORD))
                    took, out, err = run_cli(config_dir)
                    shown = out.splitlines()
                    assert shown[-1].endswith(f"message {args.messages - 1}"), err
                    assert len(shown) == args.messages and "not yet deleted" not in err, err
                    times["kuno inbox"].append(took)

                    bodies = await sealed_bodies(alice, "bob", order, args.messages)
                    await store(session, node_urls, master_token, bodies)
                    started = time.perf_counter()
                    inbox = await bob.inbox()
                    times["inbox()"].append(time.perf_counter() - started)
                    assert len(inbox.messages) == args.messages
                    assert all(n == args.nodes for n in inbox.deleted.values())

                    bodies = await sealed_bodies(alice, "bob", order, args.messages)
                    await store(session, node_urls, master_token, bodies)
                    started = time.perf_counter()
                    deleted = await asyncio.gather(
                        *(raw_inbox(session, server, "bob") for server in servers)
                    )
                    times["raw"].append(time.perf_counter() - started)
                    assert deleted == [args.messages] * args.nodes, deleted
                    print(
                        f"round {round_number + 1}: "
                        + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()),
                        flush=True,
                    )
            medians = {k: statistics.median(v) for k, v in times.items()}
            print(
                "median: "
                + ", ".join(f"{k} {v:.3f} s" for k, v in medians.items())
                + f"; kuno inbox / raw {medians['kuno inbox'] / medians['raw']:.2f}x"
                + f", inbox() / raw {medians['inbox()'] / medians['raw']:.2f}x"
                + f"; load {os.getloadavg()[0]:.2f}"
            )
        finally:
            stop_all(services, timeout=10)
            for server in servers:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
