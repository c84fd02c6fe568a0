"""The deployed system of one molecule scenario, seen from this host.

Imported by the scenarios' testinfra tests (molecule/conftest.py) and run as a command by
their side-effect playbooks:

    kunomol.py SCENARIO_DIR COMMAND [options]

Traffic goes only to the scenario's own containers: the proxy on 127.0.0.1:<its port> and
the CouchDB/standard-node containers on the scenario's private Docker networks. Every wait
is a bounded poll.
"""

# ruff: noqa: S105, S310, S603, S607 - test tooling: a fixed test password, docker by name, http URLs it builds
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

REPO = Path(__file__).resolve().parents[2]
# The containers' names have one definition, also Ansible's kuno_container_name filter.
sys.path.insert(0, str(REPO / "filter_plugins"))
from kuno_names import container_name  # noqa: E402

PASSWORD = "correct horse battery staple"
RUNNING_STATES = ("running", "triggered", "pending")
SEND_BATCH = 10
TOKEN_REUSE = 600  # seconds; the master's tokens live 900


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def wait_until(condition: Callable[[], Any], within: float, what: str, every: float = 0.2) -> float:
    """Poll until condition() is truthy; the seconds it took. AssertionError after `within`."""
    started = time.monotonic()
    last: Any = None
    while True:
        try:
            last = condition()
        except (OSError, RuntimeError, ValueError) as exc:  # not answering yet
            last = exc
        if last and not isinstance(last, Exception):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: not within {within} s (last: {last!r})")
        time.sleep(every)


@dataclass
class System:
    """One scenario's deployment: names, addresses and the admin's view of every CouchDB."""

    scenario_dir: Path

    def __post_init__(self) -> None:
        variables = yaml.safe_load((self.scenario_dir / "kuno.yml").read_text())
        self.project: str = variables["kuno_project"]
        self.proxy_port: int = int(variables["proxy_http_port"])
        self.network = f"{self.project}-internal"
        hosts = yaml.safe_load((REPO / "inventories" / "local" / "hosts.yml").read_text())
        self.nodes: list[str] = list(hosts["all"]["children"]["couchdb_nodes"]["hosts"])
        # Users and message ids of this run, kept between the steps of the scenario.
        workdir = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", self.scenario_dir))
        self.state_file = workdir / "kunomol-state.json"
        self._password: str | None = None

    # --- names and addresses -------------------------------------------------------------

    def container(self, role: str, node: str | None = None) -> str:
        return container_name(self.project, role, node)

    @property
    def containers(self) -> list[str]:
        names = [self.container(r, n) for n in self.nodes for r in ("couchdb", "standard")]
        return [*names, self.container("master"), self.container("proxy")]

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(docker("inspect", container))[0]

    def address(self, container: str) -> str:
        """Its address on the first of its networks (the private one, or a partition's)."""
        networks = self.inspect(container)["NetworkSettings"]["Networks"]
        if self.network in networks:
            return networks[self.network]["IPAddress"]
        return next(iter(networks.values()))["IPAddress"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def node_urls(self) -> list[str]:
        return [f"{self.base_url}/{node}" for node in self.nodes]

    # --- CouchDB as its admin ------------------------------------------------------------

    @property
    def admin_password(self) -> str:
        if self._password is None:
            secret = REPO / "build" / "secrets" / f"{self.project}-couchdb-admin"
            self._password = secret.read_text().strip()
        return self._password

    def couch(
        self, node: str, path: str, method: str = "GET", body: Any = None, timeout: float = 5
    ) -> tuple[int, Any]:
        url = f"http://{self.address(self.container('couchdb', node))}:5984{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        request.add_header("Content-Type", "application/json")
        token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def message_ids(self, node: str) -> set[str]:
        """Ids of the live (not deleted) documents of the node's messages database."""
        status, body = self.couch(node, "/messages/_all_docs")
        if status != 200:
            raise RuntimeError(f"{node}: _all_docs answered {status}: {body}")
        return {row["id"] for row in body["rows"] if not row["id"].startswith("_design/")}

    def leaves(self, node: str, message_id: str) -> list[dict[str, Any]]:
        """Every leaf revision of one document on one node (deleted ones included)."""
        status, body = self.couch(node, f"/messages/{quote(message_id)}?open_revs=all")
        if status == 404:
            return []
        if status != 200:
            raise RuntimeError(f"{node}: {message_id} answered {status}: {body}")
        return [leaf["ok"] for leaf in body if "ok" in leaf]

    def live_leaves(self, node: str, message_id: str) -> int:
        return sum(1 for leaf in self.leaves(node, message_id) if not leaf.get("_deleted"))

    def put_message(self, node: str, body: dict[str, Any]) -> None:
        """A message document written straight into a node's CouchDB (as a store would)."""
        doc = {"_id": body["id"], "type": "message"} | {k: v for k, v in body.items() if k != "id"}
        status, answer = self.couch(node, f"/messages/{quote(body['id'])}", "PUT", doc)
        if status == 409:  # replication brought it first: fine if it is this very document
            status, answer = self.couch(node, f"/messages/{quote(body['id'])}")
            if status == 200 and {k: v for k, v in answer.items() if k != "_rev"} == doc:
                return
        if status not in (201, 202):
            raise RuntimeError(f"{node}: PUT {body['id']} answered {status}: {answer}")

    def replications(self, node: str) -> dict[str, str]:
        status, body = self.couch(node, "/_replicator/_all_docs?include_docs=true")
        if status != 200:
            raise RuntimeError(f"{node}: _replicator answered {status}: {body}")
        return {
            row["id"]: row["doc"].get("_replication_state", "")
            for row in body["rows"]
            if row["id"].startswith("kuno-")
        }

    def replications_running(self, node: str) -> bool:
        expected = {
            f"kuno-{db}-from-{peer}"
            for db in ("messages", "users")
            for peer in self.nodes
            if peer != node
        }
        states = self.replications(node)
        return set(states) == expected and all(s in RUNNING_STATES for s in states.values())

    # --- the scenario's memory across commands ---------------------------------------------

    def load(self) -> dict[str, Any]:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"users": {}, "sent": {}, "deleted": []}

    def save(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state, indent=1))


# --- clients ---------------------------------------------------------------------------


async def new_user(system: System, prefix: str) -> Any:
    """A registered, logged-in client of its own (a fresh random name)."""
    from kuno.client.api import KunoClient
    from kuno.client.crypto import KeyPair

    client = KunoClient(system.base_url, system.node_urls)
    name = f"{prefix}-{secrets.token_hex(4)}"
    await client.register(name, PASSWORD, KeyPair.generate())
    await client.login(name, PASSWORD)
    return client


async def saved_user(system: System, state: dict[str, Any], who: str) -> Any:
    """The user the scenario registered earlier under `who` (registered now if new)."""
    from kuno.client.api import KunoClient
    from kuno.client.crypto import KeyPair

    saved = state["users"].get(who)
    if saved is None:
        client = await new_user(system, who)
    else:
        client = KunoClient(system.base_url, system.node_urls)
        keys = KeyPair.from_private_b64(saved["key"])
        # The master limits logins per user (a burst of 5): reuse the token while it is fresh.
        if time.time() < saved.get("token_until", 0):
            client.use(saved["name"], saved["token"], keys)
            return client
        await client.login(saved["name"], PASSWORD, keys)
    state["users"][who] = {
        "name": client.username,
        "key": client.keys.private_b64,
        "token": client.token,
        "token_until": time.time() + TOKEN_REUSE,
    }
    system.save(state)
    return client


async def send_offline(
    system: System, tag: str, count: int, min_stored: int, stored_on: dict[int, int]
) -> list[str]:
    """alice sends `count` messages to bob (offline); each is acknowledged as stored on at
    least `min_stored` nodes (stored_on counts the acks by their node count). Their ids are
    remembered under `tag`."""
    state = system.load()
    alice = await saved_user(system, state, "alice")
    bob = await saved_user(system, state, "bob")
    ids: list[str] = []
    try:
        await alice.public_key(bob.username)
        async with alice.connect() as socket:
            # In flight together, as a busy client's are: with a node down each send waits
            # for the master's store timeout on it.
            for first in range(0, count, SEND_BATCH):
                numbers = range(first, min(first + SEND_BATCH, count))
                acks = await asyncio.gather(
                    *(socket.send(bob.username, f"{tag} #{number}") for number in numbers)
                )
                for ack in acks:
                    assert ack.stored >= min_stored, f"{ack.id} stored on {ack.stored}/{ack.nodes}"
                    assert not ack.delivered
                    ids.append(ack.id)
                    stored_on[ack.stored] = stored_on.get(ack.stored, 0) + 1
    finally:
        await alice.close()
        await bob.close()
    state["sent"].setdefault(tag, []).extend(ids)
    system.save(state)
    return ids


def store_token(system: System) -> str:
    """A storage token as the master signs it, from the key deploy.yml made on this host."""
    from kuno.common.tokens import STORE_SCOPE, TokenSigner, load_private_key

    key_file = Path("/opt") / system.project / "secrets" / "token-private.pem"
    signer = TokenSigner(load_private_key(key_file.read_bytes()), "kuno", 600)
    return signer.sign("master", scopes=(STORE_SCOPE,), ttl=600)


async def store_direct(system: System, nodes: list[str], tag: str, count: int) -> list[str]:
    """Messages to bob stored through these nodes' standard nodes only (the far side of a
    partition, where the master cannot reach): POST /messages as the master would, the
    same body on each."""
    import aiohttp

    state = system.load()
    alice = await saved_user(system, state, "alice")
    bob = await saved_user(system, state, "bob")
    urls = [
        f"http://{system.address(system.container('standard', node))}:4001/messages"
        for node in nodes
    ]
    headers = {"Authorization": f"Bearer {store_token(system)}"}
    ids: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            for number in range(count):
                sealed = await alice.seal(bob.username, f"{tag} #{number}")
                now = int(time.time() * 1000)
                body = {
                    "id": sealed.id,
                    "senderId": alice.username,
                    "recipientId": bob.username,
                    "ciphertext": sealed.ciphertext,
                    "nonce": sealed.nonce,
                    "timestamp": now,
                    "expiresAt": now + 86_400_000,
                }
                for url in urls:
                    async with session.post(url, json=body, headers=headers) as response:
                        assert response.status == 201, f"{url}: {await response.text()}"
                ids.append(sealed.id)
    finally:
        await alice.close()
        await bob.close()
    state["sent"].setdefault(tag, []).extend(ids)
    system.save(state)
    return ids


async def delete_on(system: System, node: str, ids: list[str], direct: bool) -> None:
    """bob deletes messages through one node's standard node only (via the proxy, or
    straight to the container when the proxy cannot reach it)."""
    import aiohttp

    state = system.load()
    bob = await saved_user(system, state, "bob")
    base = (
        f"http://{system.address(system.container('standard', node))}:4001"
        if direct
        else f"{system.base_url}/{node}"
    )
    try:
        async with aiohttp.ClientSession() as session:
            for message_id in ids:
                async with session.delete(
                    f"{base}/messages/{message_id}",
                    headers={"Authorization": f"Bearer {bob.token}"},
                ) as response:
                    assert response.status == 200, f"{node}: {await response.text()}"
    finally:
        await bob.close()
    state["deleted"].extend(ids)
    system.save(state)


async def send_online(system: System, tag: str, count: int, storage: str) -> list[str]:
    """bob is online; alice sends him `count` messages: each arrives over the WebSocket.
    storage "enabled": each is acknowledged as stored on every node; "disabled": as not
    stored at all."""
    state = system.load()
    alice = await saved_user(system, state, "alice")
    bob = await saved_user(system, state, "bob")
    ids: list[str] = []
    try:
        async with bob.connect() as bob_socket, alice.connect() as alice_socket:
            for number in range(count):
                ack = await alice_socket.send(bob.username, f"{tag} #{number}")
                message = await bob_socket.receive(within=5)
                assert (message.id, message.text) == (ack.id, f"{tag} #{number}"), message
                assert ack.delivered, ack
                if storage == "disabled":
                    assert (ack.storage, ack.stored) == ("disabled", 0), ack
                else:
                    assert ack.stored == ack.nodes == len(system.nodes), ack
                ids.append(ack.id)
    finally:
        await alice.close()
        await bob.close()
    # Messages the master did not store are expected on no node.
    kept = state["sent"] if storage == "enabled" else state.setdefault("unstored", {})
    kept.setdefault(tag, []).extend(ids)
    system.save(state)
    return ids


def healthy(system: System, node: str) -> bool:
    """The node's standard node answers /health 200 (its CouchDB reachable), asked directly."""
    url = f"http://{system.address(system.container('standard', node))}:4001/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except urllib.error.URLError:
        return False


# --- checks ------------------------------------------------------------------------------


def expected_ids(state: dict[str, Any], tags: list[str] | None = None) -> set[str]:
    sent = {i for tag, ids in state["sent"].items() if tags is None or tag in tags for i in ids}
    return sent - set(state["deleted"])


def converged(
    system: System, nodes: list[str], tags: list[str] | None = None, sets_only: bool = False
) -> bool:
    """Every node holds the same live set: every message sent and not deleted, nothing
    deleted (no live leaf of a deleted message, so none can come back). sets_only: the same
    set holding the tags' messages not deleted, deletions not checked (one side of a split)."""
    state = system.load()
    want = expected_ids(state, tags)
    sets = {node: system.message_ids(node) for node in nodes}
    if any(got != sets[nodes[0]] or not want <= got for got in sets.values()):
        return False
    return sets_only or all(
        system.live_leaves(node, message_id) == 0
        for node in nodes
        for message_id in state["deleted"]
    )


def describe(system: System, nodes: list[str], tags: list[str] | None = None) -> str:
    state = system.load()
    want = expected_ids(state, tags)
    lines = []
    for node in nodes:
        got = system.message_ids(node)
        back = [i for i in state["deleted"] if system.live_leaves(node, i)]
        lines.append(
            f"{node}: {len(got)} live, missing {len(want - got)}, deleted but live {len(back)}"
        )
    return "; ".join(lines)


def caught_up(system: System, node: str, within: float) -> dict[str, float]:
    """Right after `node`'s CouchDB was started again: seconds until it answers and until it
    holds everything the others stored meanwhile (its own pulls run again)."""
    started = time.monotonic()
    wait_until(lambda: system.couch(node, "/messages")[0] == 200, within, f"{node} answers")
    answers = time.monotonic() - started
    try:
        wait_until(
            lambda: converged(system, system.nodes),
            within - answers,
            f"{node} caught up",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {describe(system, system.nodes)}") from None
    return {"answers": round(answers, 2), "caught_up": round(time.monotonic() - started, 2)}


def spreads(system: System, node: str, within: float) -> dict[str, Any]:
    """Whether a document written on `node` is readable on every other node within `within`
    seconds (their pulls from it run), and how long it took; the document is removed again."""
    started = time.monotonic()
    doc_id = f"kunomol-probe-{secrets.token_hex(6)}"
    status, body = system.couch(node, f"/messages/{doc_id}", "PUT", {"type": "probe"})
    if status not in (201, 202):
        raise RuntimeError(f"{node}: probe answered {status}: {body}")
    try:
        for other in system.nodes:
            wait_until(
                lambda other=other: system.couch(other, f"/messages/{doc_id}")[0] == 200,
                within - (time.monotonic() - started),
                f"a document written on {node} readable on {other}",
            )
    except AssertionError as exc:
        return {"spread": False, "seconds": None, "why": str(exc)}
    finally:
        # Deleted on every node that has it: none keeps it, whatever the outcome.
        for other in system.nodes:
            code, doc = system.couch(other, f"/messages/{doc_id}")
            if code == 200:
                system.couch(other, f"/messages/{doc_id}?rev={doc['_rev']}", "DELETE")
    return {"spread": True, "seconds": round(time.monotonic() - started, 2)}


# --- the command line of the side-effect playbooks -----------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kunomol.py")
    parser.add_argument("scenario_dir", type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    reset = commands.add_parser("reset", help="forget the users and messages of an earlier run")
    del reset
    send = commands.add_parser("send", help="alice sends messages to bob through the master")
    send.add_argument("--tag", required=True)
    send.add_argument("--count", type=int, required=True)
    send.add_argument("--min-stored", type=int, required=True)
    store = commands.add_parser("store-direct", help="store messages through some nodes only")
    store.add_argument("--nodes", required=True, help="comma-separated")
    store.add_argument("--tag", required=True)
    store.add_argument("--count", type=int, required=True)
    online = commands.add_parser("online", help="alice sends to bob, who is online")
    online.add_argument("--tag", required=True)
    online.add_argument("--count", type=int, required=True)
    online.add_argument("--storage", choices=["enabled", "disabled"], required=True)
    delete = commands.add_parser("delete", help="bob deletes messages through one node only")
    delete.add_argument("--node", required=True)
    delete.add_argument("--tag", required=True)
    delete.add_argument("--count", type=int, required=True)
    delete.add_argument("--skip", type=int, default=0, help="leave the first SKIP of the tag")
    delete.add_argument("--direct", action="store_true", help="not through the proxy")
    stored = commands.add_parser("converged", help="wait until the nodes hold the same set")
    stored.add_argument("--nodes", default="", help="comma-separated; all by default")
    stored.add_argument("--tags", default="", help="comma-separated; all by default")
    stored.add_argument("--within", type=float, required=True)
    stored.add_argument("--sets-only", action="store_true", help="deletions not checked")
    absent = commands.add_parser("absent", help="assert nodes hold none of a tag's messages")
    absent.add_argument("--nodes", required=True)
    absent.add_argument("--tag", required=True)
    health = commands.add_parser("healthy", help="wait until a standard node reaches CouchDB")
    health.add_argument("--node", required=True)
    health.add_argument("--within", type=float, required=True)
    replicating = commands.add_parser("replicating", help="wait until every replication runs")
    replicating.add_argument("--within", type=float, required=True)
    catching = commands.add_parser("caught-up", help="time a restarted CouchDB's own pulls")
    catching.add_argument("--node", required=True)
    catching.add_argument("--within", type=float, required=True)
    spreading = commands.add_parser("spreads", help="time a write on a node to reach the others")
    spreading.add_argument("--node", required=True)
    spreading.add_argument("--within", type=float, required=True)
    args = parser.parse_args(argv)

    system = System(args.scenario_dir.resolve())
    report: dict[str, Any] = {"command": args.command}
    if args.command == "reset":
        system.state_file.unlink(missing_ok=True)
    elif args.command == "send":
        stored_on: dict[int, int] = {}
        ids = asyncio.run(send_offline(system, args.tag, args.count, args.min_stored, stored_on))
        report |= {"sent": len(ids), "acks_by_nodes_stored": stored_on}
    elif args.command == "online":
        ids = asyncio.run(send_online(system, args.tag, args.count, args.storage))
        report["sent"] = len(ids)
    elif args.command == "store-direct":
        ids = asyncio.run(store_direct(system, args.nodes.split(","), args.tag, args.count))
        report["stored"] = len(ids)
    elif args.command == "delete":
        chosen = system.load()["sent"][args.tag][args.skip : args.skip + args.count]
        asyncio.run(delete_on(system, args.node, chosen, args.direct))
        report["deleted"] = len(chosen)
    elif args.command == "converged":
        nodes = args.nodes.split(",") if args.nodes else system.nodes
        tags = args.tags.split(",") if args.tags else None
        try:
            seconds = wait_until(
                lambda: converged(system, nodes, tags, args.sets_only),
                args.within,
                "nodes converged",
            )
        except AssertionError as exc:
            raise SystemExit(f"{exc}: {describe(system, nodes, tags)}") from None
        report |= {"nodes": nodes, "seconds": round(seconds, 2)}
        report["messages"] = len(system.message_ids(nodes[0]))
    elif args.command == "absent":
        state = system.load()
        ids = set(state["sent"].get(args.tag) or state.get("unstored", {})[args.tag])
        for node in args.nodes.split(","):
            held = ids & system.message_ids(node)
            if held:
                raise SystemExit(f"{node} holds {len(held)} message(s) of {args.tag}")
    elif args.command == "healthy":
        seconds = wait_until(
            lambda: healthy(system, args.node), args.within, f"{args.node} healthy"
        )
        report["seconds"] = round(seconds, 2)
    elif args.command == "replicating":
        seconds = wait_until(
            lambda: all(system.replications_running(node) for node in system.nodes),
            args.within,
            "every replication running",
        )
        report["seconds"] = round(seconds, 2)
    elif args.command == "caught-up":
        report |= caught_up(system, args.node, args.within)
    elif args.command == "spreads":
        report |= spreads(system, args.node, args.within)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
