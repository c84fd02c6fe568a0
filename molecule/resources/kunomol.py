"""The deployed system of one molecule scenario, seen from this host.

Imported by the scenarios' testinfra tests (molecule/conftest.py) and run as a command by
their side-effect playbooks:

    kunomol.py SCENARIO_DIR COMMAND [options]

Traffic goes only to the scenario's own containers: the proxy on 127.0.0.1:<its port> and
the CouchDB/standard-node containers on the scenario's private Docker networks. Every wait
is a bounded poll.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a command by a side-effect playbook
    sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.support.system import (  # noqa: E402
    PASSWORD,
    Deployed,
    docker,
    stored_message,
    wait_until,
)

__all__ = ["Prometheus", "System", "about", "converged", "describe", "expected_ids", "wait_until"]

SEND_BATCH = 10
TOKEN_REUSE = 600  # seconds; the master's tokens live 900


class System(Deployed):
    """One scenario's deployment (tests.support.system.Deployed: names, addresses, the
    admin's view of every CouchDB), its project and proxy port from the scenario's
    kuno.yml, and the scenario's memory across commands (`load`, `save`)."""

    def __init__(self, scenario_dir: Path) -> None:
        variables = yaml.safe_load((scenario_dir / "kuno.yml").read_text())
        super().__init__(variables["kuno_project"], int(variables["proxy_http_port"]))
        self.scenario_dir = scenario_dir
        # Users and message ids of this run, kept between the steps of the scenario.
        workdir = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", scenario_dir))
        self.state_file = workdir / "kunomol-state.json"

    def load(self) -> dict[str, Any]:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"users": {}, "sent": {}, "deleted": []}

    def save(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state, indent=1))

    def get_json(self, url: str, timeout: float = 5) -> Any:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - our containers
            return json.loads(answer.read())

    def node_health(self, node: str) -> dict[str, Any]:
        """The node's /health (straight, not through the proxy), whatever its status."""
        try:
            return self.get_json(f"{self.standard_url(node)}/health")
        except urllib.error.HTTPError as exc:  # 503 degraded: the body still says why
            return json.loads(exc.read() or b"{}")

    def node_metrics(self, node: str) -> list[tuple[str, dict[str, str], float]]:
        """The samples of the node's /metrics: (name, labels, value)."""
        url = f"{self.standard_url(node)}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our container
            text = answer.read().decode()
        return [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]


class Prometheus:
    """The scenario's Prometheus, at the host port Docker published for its 9090."""

    def __init__(self, system: System) -> None:
        binding = docker("port", system.container("prometheus"), "9090/tcp").splitlines()[0]
        self.url = f"http://{binding}"

    def firing(self) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/alerts"  # http://127.0.0.1:<port>, from docker port
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            body = json.loads(response.read())
        return [a for a in body["data"]["alerts"] if a["state"] == "firing"]


def about(alerts: list[dict[str, Any]], node: str) -> dict[str, list[dict[str, str]]]:
    """The firing alerts that concern one storage node, by name (their labels)."""
    found: dict[str, list[dict[str, str]]] = {}
    for alert in alerts:
        labels = alert["labels"]
        if node in (labels.get("node"), labels.get("source"), labels.get("target")):
            found.setdefault(labels["alertname"], []).append(labels)
    return found


# --- clients ---------------------------------------------------------------------------


async def saved_user(system: System, state: dict[str, Any], who: str) -> Any:
    """The user the scenario registered earlier under `who` (registered now if new)."""
    from kuno.client.api import KunoClient
    from kuno.client.crypto import KeyPair

    saved = state["users"].get(who)
    if saved is None:
        client = await system.new_user(who)
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


async def sent_by_alice(
    system: System, tag: str, scene: Callable[[Any, Any], Awaitable[list[str]]]
) -> list[str]:
    """scene(alice, bob)'s message ids, remembered under `tag`: the scenario's saved users
    alice and bob (tests.support.system's clients), closed afterwards."""
    state = system.load()
    alice = await saved_user(system, state, "alice")
    bob = await saved_user(system, state, "bob")
    try:
        ids = await scene(alice, bob)
    finally:
        await alice.close()
        await bob.close()
    state["sent"].setdefault(tag, []).extend(ids)
    system.save(state)
    return ids


async def send_offline(
    system: System, tag: str, count: int, min_stored: int, stored_on: dict[int, int]
) -> list[str]:
    """alice sends `count` messages to bob (offline); each is acknowledged as stored on at
    least `min_stored` nodes (stored_on counts the acks by their node count). Their ids are
    remembered under `tag`."""

    async def scene(alice: Any, bob: Any) -> list[str]:
        ids: list[str] = []
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
        return ids

    return await sent_by_alice(system, tag, scene)


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

    urls = [f"{system.standard_url(node)}/messages" for node in nodes]
    headers = {"Authorization": f"Bearer {store_token(system)}"}

    async def scene(alice: Any, bob: Any) -> list[str]:
        ids: list[str] = []
        async with aiohttp.ClientSession() as session:
            for number in range(count):
                sealed = await alice.seal(bob.username, f"{tag} #{number}")
                now = int(time.time() * 1000)
                body = stored_message(sealed, alice.username, bob.username, now, now + 86_400_000)
                for url in urls:
                    async with session.post(url, json=body, headers=headers) as response:
                        assert response.status == 201, f"{url}: {await response.text()}"
                ids.append(sealed.id)
        return ids

    return await sent_by_alice(system, tag, scene)


async def delete_on(system: System, node: str, ids: list[str], direct: bool) -> None:
    """bob deletes messages through one node's standard node only (via the proxy, or
    straight to the container when the proxy cannot reach it)."""
    import aiohttp

    state = system.load()
    bob = await saved_user(system, state, "bob")
    base = system.standard_url(node) if direct else f"{system.base_url}/{node}"
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

# name -> (help, [(argument names, argparse options)], run(system, args) -> report fields)
Command = tuple[str, list[tuple[tuple[str, ...], dict[str, Any]]], Callable[..., dict[str, Any]]]
COMMANDS: dict[str, Command] = {}


def arg(*names: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return names, options


def command(name: str, help: str, *arguments: tuple[tuple[str, ...], dict[str, Any]]) -> Any:
    """Registers a command of the command line: its help, its arguments, its function."""

    def register(run: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        COMMANDS[name] = (help, list(arguments), run)
        return run

    return register


def nodes_of(text: str, system: System) -> list[str]:
    """A comma-separated list of nodes; every node when empty."""
    return text.split(",") if text else system.nodes


TAG = arg("--tag", required=True)
COUNT = arg("--count", type=int, required=True)
WITHIN = arg("--within", type=float, required=True)
NODE = arg("--node", required=True)


@command("reset", "forget the users and messages of an earlier run")
def reset(system: System, args: argparse.Namespace) -> dict[str, Any]:
    system.state_file.unlink(missing_ok=True)
    return {}


@command(
    "send",
    "alice sends messages to bob through the master",
    TAG,
    COUNT,
    arg("--min-stored", type=int, required=True),
)
def send(system: System, args: argparse.Namespace) -> dict[str, Any]:
    stored_on: dict[int, int] = {}
    ids = asyncio.run(send_offline(system, args.tag, args.count, args.min_stored, stored_on))
    return {"sent": len(ids), "acks_by_nodes_stored": stored_on}


@command(
    "store-direct",
    "store messages through some nodes only",
    arg("--nodes", required=True, help="comma-separated"),
    TAG,
    COUNT,
)
def store(system: System, args: argparse.Namespace) -> dict[str, Any]:
    ids = asyncio.run(store_direct(system, args.nodes.split(","), args.tag, args.count))
    return {"stored": len(ids)}


@command(
    "delete",
    "bob deletes messages through one node only",
    NODE,
    TAG,
    COUNT,
    arg("--skip", type=int, default=0, help="leave the first SKIP of the tag"),
    arg("--direct", action="store_true", help="not through the proxy"),
)
def delete(system: System, args: argparse.Namespace) -> dict[str, Any]:
    chosen = system.load()["sent"][args.tag][args.skip : args.skip + args.count]
    asyncio.run(delete_on(system, args.node, chosen, args.direct))
    return {"deleted": len(chosen)}


@command(
    "converged",
    "wait until the nodes hold the same set",
    arg("--nodes", default="", help="comma-separated; all by default"),
    arg("--tags", default="", help="comma-separated; all by default"),
    WITHIN,
    arg("--sets-only", action="store_true", help="deletions not checked"),
)
def wait_converged(system: System, args: argparse.Namespace) -> dict[str, Any]:
    nodes = nodes_of(args.nodes, system)
    tags = args.tags.split(",") if args.tags else None
    try:
        seconds = wait_until(
            lambda: converged(system, nodes, tags, args.sets_only), args.within, "nodes converged"
        )
    except AssertionError as exc:
        raise SystemExit(f"{exc}: {describe(system, nodes, tags)}") from None
    messages = len(system.message_ids(nodes[0]))
    return {"nodes": nodes, "seconds": round(seconds, 2), "messages": messages}


@command(
    "absent",
    "assert nodes hold none of a tag's messages",
    arg("--nodes", required=True, help="comma-separated"),
    TAG,
)
def absent(system: System, args: argparse.Namespace) -> dict[str, Any]:
    ids = set(system.load()["sent"][args.tag])
    for node in nodes_of(args.nodes, system):
        held = ids & system.message_ids(node)
        if held:
            raise SystemExit(f"{node} holds {len(held)} message(s) of {args.tag}")
    return {"nodes": nodes_of(args.nodes, system), "absent": len(ids)}


@command("healthy", "wait until a standard node reaches CouchDB", NODE, WITHIN)
def wait_healthy(system: System, args: argparse.Namespace) -> dict[str, Any]:
    seconds = wait_until(lambda: system.healthy(args.node), args.within, f"{args.node} healthy")
    return {"seconds": round(seconds, 2)}


@command("replicating", "wait until every replication runs", WITHIN)
def replicating(system: System, args: argparse.Namespace) -> dict[str, Any]:
    seconds = wait_until(
        lambda: all(system.replications_running(node) for node in system.nodes),
        args.within,
        "every replication running",
    )
    return {"seconds": round(seconds, 2)}


@command("caught-up", "time a restarted CouchDB's own pulls", NODE, WITHIN)
def catching_up(system: System, args: argparse.Namespace) -> dict[str, Any]:
    return caught_up(system, args.node, args.within)


@command("spreads", "time a write on a node to reach the others", NODE, WITHIN)
def spreading(system: System, args: argparse.Namespace) -> dict[str, Any]:
    return spreads(system, args.node, args.within)


def yes_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise argparse.ArgumentTypeError("yes or no")
    return text == "yes"


@command(
    "mesh",
    "wait until a node's /health and /metrics say the mesh is (not) complete",
    NODE,
    arg("--complete", type=yes_no, required=True, help="yes or no"),
    WITHIN,
)
def wait_mesh(system: System, args: argparse.Namespace) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def looks() -> bool:
        health = system.node_health(args.node)
        missing = sorted(
            labels["source"] + "/" + labels["database"]
            for name, labels, value in system.node_metrics(args.node)
            if name == "kuno_replication_link_state" and labels["state"] == "missing" and value
        )
        seen.update(mesh=health.get("mesh"), missing=health.get("links", {}).get("missing"))
        seen["missing_in_metrics"] = missing
        return (
            health.get("mesh", {}).get("complete") is args.complete
            and (not missing) is args.complete
        )

    try:
        seconds = wait_until(looks, args.within, f"{args.node}: mesh complete is {args.complete}")
    except AssertionError as exc:
        raise SystemExit(f"{exc}: {seen}") from None
    return {"seconds": round(seconds, 2)} | seen


@command(
    "alert",
    "wait until an alert of the scenario's Prometheus fires (or no longer does)",
    arg("--name", required=True),
    arg("--firing", type=yes_no, required=True, help="yes or no"),
    WITHIN,
)
def wait_alert(system: System, args: argparse.Namespace) -> dict[str, Any]:
    prometheus = Prometheus(system)

    def looks() -> bool:
        names = {alert["labels"]["alertname"] for alert in prometheus.firing()}
        return (args.name in names) is args.firing

    seconds = wait_until(looks, args.within, f"{args.name} firing is {args.firing}", every=1)
    return {"seconds": round(seconds, 2)}


@command(
    "remove-replication",
    "remove a replication document by hand, as an operator would",
    NODE,
    arg("--id", required=True),
)
def remove_replication(system: System, args: argparse.Namespace) -> dict[str, Any]:
    path = f"/_replicator/{args.id}"
    status, doc = system.couch(args.node, path)
    if status != 200:
        raise SystemExit(f"{args.node}: {path} answered {status}: {doc}")
    status, answer = system.couch(args.node, f"{path}?rev={doc['_rev']}", "DELETE")
    if status not in (200, 202):
        raise SystemExit(f"{args.node}: DELETE {path} answered {status}: {answer}")
    return {"removed": args.id}


@command(
    "watchdog",
    "the stalled-link watchdog's restarts on every node, by outcome; fails on any but restarted",
)
def watchdog_restarts(system: System, args: argparse.Namespace) -> dict[str, Any]:
    outcomes: dict[str, float] = {}
    stalled = 0.0
    for node in system.nodes:
        for name, labels, value in system.node_metrics(node):
            if name == "kuno_replication_watchdog_restarts_total":
                outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + value
            elif name == "kuno_replication_link_stalled":
                stalled += value
    others = {outcome: n for outcome, n in outcomes.items() if outcome != "restarted" and n}
    if others:
        raise SystemExit(f"watchdog restarts other than restarted: {outcomes}")
    return {"restarts": outcomes, "stalled_now": stalled}


def main(argv: list[str] | None = None) -> int:
    """kunomol.py SCENARIO_DIR COMMAND [options]: runs the command, prints its report (JSON)."""
    parser = argparse.ArgumentParser(prog="kunomol.py")
    parser.add_argument("scenario_dir", type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, arguments, run) in COMMANDS.items():
        subparser = commands.add_parser(name, help=help_text)
        for names, options in arguments:
            subparser.add_argument(*names, **options)
        subparser.set_defaults(run=run)
    args = parser.parse_args(argv)
    report = args.run(System(args.scenario_dir.resolve()), args)
    print(json.dumps({"command": args.command} | report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
