"""The web page's start with 500 stored messages vs. `kuno inbox` for the same 500, on a
deployed system; and the page's bundle size, gzipped.

    .venv/bin/python -m bench.web_startup [--project kuno] [--port 8080] [--messages 500]
    .venv/bin/python -m bench.web_startup --local

Against a deployment (`make deploy`: project kuno, proxy on 127.0.0.1:8080), from this host:
bob registers in headless Chromium (Debian's, /usr/bin/chromium), so his key is made and
kept by the page, and exports it (key.json) for his `kuno` command; alice is registered
over the API and seals with kuno.client.crypto. Each round, twice: `--messages` messages
from alice to bob, sealed for him, each written into one storage node's CouchDB in turn
(message i on node i mod N, as the master writes messages) and replicated until every node
lists them all, as after the master's fan-out. Then, timed:

- page: bob opens the page and presses Log in; from the click to the last message shown
  in the conversation (counted on each animation frame), and to the last of the page's
  delete requests answered (the page's Resource Timing), all in the page's clock; then every
  node is checked to list none;
- `kuno inbox` (the command, a process: start-up, list, decrypt, print, delete) with bob's
  exported key and a token from one `kuno login`.

`--local` runs the same without Docker: three replicating pouchdb-servers, a standard node
on each and a master, processes on 127.0.0.1 (as bench/inbox.py), and the page served by
`vite preview` from apps/web/dist (run `make web` first) standing in for the proxy.

Targets (issue 13): page shown and deleted everywhere <= 2 s for 500; bundle <= 200 KB
gzipped. Every loop is bounded (`--rounds`, each wait by a deadline). Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from playwright.sync_api import sync_playwright

from bench.master_throughput import master_service
from bench.process import Service, stop_all
from bench.standard_node import node_service
from kuno.client.crypto import KeyPair, seal
from kuno.client.profile import Profile
from kuno.common.messages import MAX_SEQ, Message
from kuno.common.tokens import generate_key_pair
from kuno.master.routing import SendOrder
from kuno.standard.store import RECIPIENT_INDEX, RECIPIENT_SORT
from tests.support.pouchdb import PouchServer, free_port, http_json
from tests.support.schema import apply_schema
from tests.support.system import REPO, Deployed, wait_until
from tests.support.web import MainScreen, WebUser, launch

PASSWORD = "bench password 13"
DAY_MS = 86_400_000
# Per animation frame: the moment the last message is in the conversation.
ALL_SHOWN = """(count) => {
  const log = '[role="log"]';
  const shown = document.querySelectorAll(`${log} article, ${log} [role="article"]`).length;
  return shown >= count ? performance.now() : false;
}"""
DELETES_ANSWERED = """() => performance.getEntriesByType("resource")
  .filter((entry) => entry.name.includes("/messages/delete"))
  .map((entry) => entry.responseEnd)"""


class System(Protocol):
    """What the bench needs of the system: Deployed, or LocalSystem."""

    nodes: list[str]

    @property
    def base_url(self) -> str: ...

    @property
    def node_urls(self) -> list[str]: ...

    def couch(
        self, node: str, path: str, method: str = "GET", body: Any = None, timeout: float = 10
    ) -> tuple[int, Any]: ...


class LocalSystem:
    """pouchdb-servers replicating `messages` in a full mesh, a standard node on each, a
    master, and `vite preview` serving the page and proxying /api, /ws and /nodeK."""

    def __init__(self, servers: list[PouchServer], base_url: str, node_urls: list[str]) -> None:
        self.servers = servers
        self.nodes = [f"node{n}" for n in range(1, len(servers) + 1)]
        self.base_url = base_url
        self.node_urls = node_urls

    def couch(
        self, node: str, path: str, method: str = "GET", body: Any = None, timeout: float = 10
    ) -> tuple[int, Any]:
        server = self.servers[self.nodes.index(node)]
        return http_json(method, f"{server.url}{path}", body, timeout)


@contextlib.contextmanager
def local_system(tmp: Path, count: int = 3) -> Iterator[LocalSystem]:
    dist = REPO / "apps" / "web" / "dist" / "index.html"
    if not dist.exists():
        raise SystemExit("no apps/web/dist: run make web first")
    private_pem, public_pem = generate_key_pair()
    public_key, private_key = tmp / "public.pem", tmp / "private.pem"
    public_key.write_bytes(public_pem)
    private_key.write_bytes(private_pem)
    private_key.chmod(0o600)
    servers = [PouchServer(tmp / f"couchdb{n}", f"bench-web{n}").start() for n in range(count)]
    services: list[Service] = []
    preview: subprocess.Popen[bytes] | None = None
    try:
        for server in servers:
            services.append(node_service(server, public_key, "messages"))
            services[-1].start()
        for target in servers:
            for source in servers:
                if source is not target:
                    target.replicate_from(source, "messages")
        node_urls = [service.url for service in services]
        apply_schema(servers[0].url, users="users")
        services.append(master_service(servers[:1], node_urls, private_key, in_flight=2))
        master_url = services[-1].start().url
        port = free_port()
        preview = subprocess.Popen(
            [*("npx", "vite", "preview", "--strictPort", "--port", str(port))],
            cwd=REPO / "apps" / "web",
            env={**os.environ, "KUNO_MASTER": master_url, "KUNO_NODES": ",".join(node_urls)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base_url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            with urllib.request.urlopen(f"{base_url}/config.json", timeout=2) as answer:
                return answer.status == 200

        wait_until(answers, within=60, what="vite preview")
        yield LocalSystem(servers, base_url, node_urls)
    finally:
        if preview is not None:
            preview.terminate()
            preview.wait(timeout=10)
        stop_all(services, timeout=10)
        for server in servers:
            server.stop()


def post_json(url: str, body: Any, token: str | None = None) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def store_spread(
    system: System,
    sender: str,
    sender_keys: KeyPair,
    recipient: str,
    recipient_key: str,
    order: SendOrder,
    count: int,
) -> list[str]:
    """`count` sealed messages "message 0"... written round-robin into the nodes' CouchDBs,
    then waited for until every node lists them all (replication). Their ids."""
    now = int(time.time() * 1000)
    per_node: dict[str, list[dict[str, Any]]] = {node: [] for node in system.nodes}
    ids = []
    for index in range(count):
        ciphertext, nonce = seal(f"message {index}", sender_keys, recipient_key)
        message = Message(
            id=str(uuid.uuid4()),
            senderId=sender,
            recipientId=recipient,
            ciphertext=ciphertext,
            nonce=nonce,
            timestamp=now,
            expiresAt=now + DAY_MS,
            seq=order.next(),
        )
        ids.append(message.id)
        per_node[system.nodes[index % len(system.nodes)]].append(message.to_document())
    for node, docs in per_node.items():
        status, answer = system.couch(node, "/messages/_bulk_docs", "POST", {"docs": docs}, 60)
        assert status == 201 and all("error" not in row for row in answer), (node, status)
    for node in system.nodes:
        wait_until(
            lambda node=node: listed(system, node, recipient) == count,
            within=120,
            what=f"{count} messages on {node}",
            every=0.2,
        )
    return ids


def listed(system: System, node: str, recipient: str) -> int:
    """How many live messages the node's CouchDB holds for the recipient."""
    # The standard node's own query shape (pouchdb-server 4.2 needs the index and its sort).
    query = {
        "selector": {"recipientId": recipient, "seq": {"$gte": 0, "$lte": MAX_SEQ}},
        "sort": RECIPIENT_SORT,
        "use_index": RECIPIENT_INDEX.use_index,
        "fields": ["_id"],
        "limit": 100_000,
    }
    status, answer = system.couch(node, "/messages/_find", "POST", query, 60)
    if status != 200:  # pouchdb-server's _find can trip over concurrent deletes: ask again
        raise RuntimeError(f"{node}: _find answered {status}: {answer}")
    return len(answer["docs"])


def nobody_lists(system: System, recipient: str) -> bool:
    return all(listed(system, node, recipient) == 0 for node in system.nodes)


def bundle_sizes(base_url: str) -> dict[str, tuple[int, int, int]]:
    """Per file of the page (index.html and what it loads): raw bytes, bytes the proxy
    sends gzipped, and gzip -9 of the same."""

    def fetch(path: str, encoding: str) -> bytes:
        request = urllib.request.Request(f"{base_url}{path}", headers={"Accept-Encoding": encoding})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()

    sizes = {}
    index = fetch("/", "identity")
    for path in ["/", *re.findall(r'(?:src|href)="(/assets/[^"]+)"', index.decode())]:
        raw = fetch(path, "identity")
        sizes[path] = (len(raw), len(fetch(path, "gzip")), len(gzip.compress(raw, 9)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="kuno", help="the deployment's kuno_project")
    parser.add_argument("--port", type=int, default=8080, help="its proxy on 127.0.0.1")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local", action="store_true", help="services on 127.0.0.1, no Docker")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds: 1 to 10")
    with tempfile.TemporaryDirectory(prefix="kuno-bench-web-") as tmp:
        if args.local:
            with local_system(Path(tmp)) as system:
                run(system, args, Path(tmp), "local: processes on 127.0.0.1, vite preview")
        else:
            where = f"project {args.project}, proxy 127.0.0.1:{args.port}"
            run(Deployed(args.project, args.port), args, Path(tmp), where)


def run(system: System, args: argparse.Namespace, tmp: Path, where: str) -> None:
    base = system.base_url
    sizes = bundle_sizes(base)
    total = [sum(column) for column in zip(*sizes.values(), strict=True)]
    print(f"# bundle: {len(sizes)} files", flush=True)
    for path, (raw, served, best) in sizes.items():
        print(f"  {path}: {raw} B, served gzipped {served} B, gzip -9 {best} B")
    print(
        f"  total {total[0] / 1000:.1f} kB, served gzipped {total[1] / 1000:.1f} kB, "
        f"gzip -9 {total[2] / 1000:.1f} kB (target <= 200 KB gzipped)",
        flush=True,
    )

    alice, bob_name = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    alice_keys = KeyPair.generate()
    post_json(
        f"{base}/api/register",
        {"username": alice, "password": PASSWORD, "publicKey": alice_keys.public_b64},
    )
    order = SendOrder()
    times: dict[str, list[float]] = {"page shown": [], "page deleted": [], "kuno inbox": []}
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            bob = WebUser(browser, base, tmp, "bob")
            main_screen = bob.register(bob_name, PASSWORD)
            main_screen.expect_connected()
            config_dir = tmp / "cli"
            config_dir.mkdir(mode=0o700)
            key_file = main_screen.export_key(config_dir)
            key_file.chmod(0o600)
            bob_key = json.loads(key_file.read_text())["publicKey"]
            bob.close_page()
            Profile(config_dir, base, system.node_urls, bob_name).save()
            env = {**os.environ, "KUNO_CONFIG_DIR": str(config_dir)}
            cli = [sys.executable, "-m", "kuno.client"]
            subprocess.run(
                [*cli, "login", bob_name, "--password-stdin"],
                input=PASSWORD,
                env=env,
                text=True,
                capture_output=True,
                check=True,
                timeout=60,
            )
            print(
                f"# {args.messages} messages over {len(system.nodes)} nodes, {where}; "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            for number in range(1, args.rounds + 1):
                store_spread(system, alice, alice_keys, bob_name, bob_key, order, args.messages)
                login = bob.open()
                login.fill(bob_name, PASSWORD)
                clicked = float(bob.tab.evaluate("performance.now()"))
                login.log_in_button.click()
                screen = MainScreen(bob)
                screen.open_conversation(alice)
                shown = float(
                    bob.tab.wait_for_function(
                        ALL_SHOWN, arg=args.messages, polling="raf", timeout=120_000
                    ).json_value()
                )
                wait_until(
                    lambda: nobody_lists(system, bob_name), within=120, what="deleted", every=0.1
                )
                deletes = bob.tab.evaluate(DELETES_ANSWERED)
                assert deletes, "the page sent no delete"
                times["page shown"].append((shown - clicked) / 1000)
                times["page deleted"].append((max(max(deletes), shown) - clicked) / 1000)
                bob.close_page()

                store_spread(system, alice, alice_keys, bob_name, bob_key, order, args.messages)
                started = time.perf_counter()
                done = subprocess.run(
                    [*cli, "inbox"],
                    env=env,
                    text=True,
                    capture_output=True,
                    timeout=120,
                    check=False,
                )
                times["kuno inbox"].append(time.perf_counter() - started)
                assert done.returncode == 0, done.stderr
                assert len(done.stdout.splitlines()) == args.messages, done.stderr
                assert nobody_lists(system, bob_name), "kuno inbox left messages"
                print(
                    f"round {number}: "
                    + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items())
                    + f"; load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        finally:
            browser.close()
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(
        "median: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in medians.items())
        + f"; page deleted / kuno inbox {medians['page deleted'] / medians['kuno inbox']:.2f}x"
        + f"; load {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
