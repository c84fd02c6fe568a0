"""The system under test, however it runs: what every whole-system harness offers.

Three harnesses run the whole system: tests/e2e/cluster.py (the services in the test's own
event loop on pouchdb-servers), tests/deploy/conftest.py (deploy.yml on this machine's
Docker, one deployment a session) and molecule/resources/kunomol.py (a molecule
scenario's deployment). They share this module:

- `SystemUnderTest`: the master's URL, the storage nodes' names and URLs, what each
  node's CouchDB holds (`holds`, `message_ids`, `stored_on`) and fresh users (`new_user`);
- `Deployed`: a system deploy.yml made under a project of its own, seen from this host:
  its containers (`container_name`, the one place their names are spelled), their
  addresses on the private network, every CouchDB as its admin, the replications;
- `docker`, `docker_answers`, `release_version`, `wait_until`: the tools around them.

Traffic goes only to 127.0.0.1 and to the project's own containers. Every wait is a
bounded poll.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from filter_plugins.kuno_names import container_name
from kuno.common.messages import Message
from kuno.common.replications import ID_PREFIX, RUNNING_STATES, pull_ids

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
DATABASES = ["messages", "users"]


# --- tools ---------------------------------------------------------------------------------


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """`docker ARGS...`'s stdout, stripped. RuntimeError with its stderr when it fails."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def docker_answers() -> bool:
    """Whether a Docker engine answers `docker info` within 30 s."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def release_version() -> str:
    """The release of the working tree (scripts/release-version)."""
    return subprocess.run(
        [str(REPO / "scripts" / "release-version")], capture_output=True, text=True, check=True
    ).stdout.strip()


def wait_until(condition: Callable[[], Any], within: float, what: str, every: float = 0.2) -> float:
    """Poll until condition() is truthy; the seconds it took. AssertionError naming `what`
    and the last value (or exception) after `within` seconds."""
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


def inventory_nodes(inventory: Path = REPO / "inventories" / "local") -> list[str]:
    """The storage nodes (group couchdb_nodes) of an inventory directory's hosts.yml."""
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    return list(hosts["all"]["children"]["couchdb_nodes"]["hosts"])


def stored_message(
    sealed: Any, sender: str, recipient: str, timestamp_ms: int, expires_at_ms: int
) -> dict[str, Any]:
    """The body the master stores on a standard node (POST /messages) for a sealed message
    (kuno.client.api.Outgoing): times in milliseconds since the epoch."""
    return {
        "id": sealed.id,
        "senderId": sender,
        "recipientId": recipient,
        "ciphertext": sealed.ciphertext,
        "nonce": sealed.nonce,
        "timestamp": timestamp_ms,
        "expiresAt": expires_at_ms,
    }


# --- the system, whichever harness runs it ---------------------------------------------------


class SystemUnderTest:
    """The whole system as a client and a checker see it.

    Subclasses give `nodes` (storage node names, node1...), `base_url` (where clients
    reach the master), `node_urls` (each storage node's, in the order of `nodes`) and
    `holds`/`message_ids` (what a node's CouchDB holds, live).
    """

    nodes: list[str]

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    @property
    def node_urls(self) -> list[str]:
        raise NotImplementedError

    def holds(self, node: str, message_id: str) -> bool:
        """Whether the node's CouchDB holds the message, live (not deleted)."""
        raise NotImplementedError

    def message_ids(self, node: str) -> set[str]:
        """Ids of the live documents of the node's messages database (no design documents)."""
        raise NotImplementedError

    def stored_on(self, message_id: str) -> list[bool]:
        """Whether each node (in the order of `nodes`) holds the message, live."""
        return [self.holds(node, message_id) for node in self.nodes]

    async def new_user(self, prefix: str, password: str = PASSWORD, **options: Any) -> Any:
        """A registered, logged-in client (KunoClient) of a fresh name `<prefix>-<random>`;
        options go to KunoClient. The caller closes it."""
        from kuno.client.api import KunoClient
        from kuno.client.crypto import KeyPair

        client = KunoClient(self.base_url, self.node_urls, **options)
        name = f"{prefix}-{secrets.token_hex(4)}"
        try:
            await client.register(name, password, KeyPair.generate())
            await client.login(name, password)
        except BaseException:
            await client.close()
            raise
        return client

    async def assert_nothing_left_for(self, client: Any) -> None:
        """Every standard node returns an empty list to the client's user (asked straight,
        page by page), and so does the client's inbox. AssertionError naming the node."""
        for url in self.node_urls:
            assert await client._all_pages(url, client.username or "") == [], url
        assert (await client.inbox()).messages == []

    async def with_users(self, scene: Callable[[Any, Any], Awaitable[Any]]) -> Any:
        """scene(alice, bob)'s result: two fresh users, closed afterwards."""
        alice = await self.new_user("alice")
        try:
            bob = await self.new_user("bob")
            try:
                return await scene(alice, bob)
            finally:
                await bob.close()
        finally:
            await alice.close()

    async def deliver_online(
        self, alice: Any, bob: Any, texts: list[str], stored: bool
    ) -> list[Any]:
        """bob online, alice sends him each text: each arrives over his WebSocket within 5 s,
        acknowledged as delivered and as stored on every node (stored) or, storage disabled,
        on none. The acks (kuno.client.api.Ack)."""
        acks = []
        async with bob.connect() as bob_socket, alice.connect() as alice_socket:
            for text in texts:
                ack = await alice_socket.send(bob.username, text)
                message = await bob_socket.receive(within=5)
                assert (message.id, message.text) == (ack.id, text), message
                assert ack.delivered, ack
                if stored:
                    assert ack.stored == ack.nodes == len(self.nodes), ack
                else:
                    assert (ack.storage, ack.stored) == ("disabled", 0), ack
                acks.append(ack)
        return acks


class Deployed(SystemUnderTest):
    """A system deploy.yml made under `project` (container, network and volume names),
    its proxy on 127.0.0.1:`proxy_port`, its storage nodes `nodes`."""

    def __init__(self, project: str, proxy_port: int, nodes: list[str] | None = None) -> None:
        self.project = project
        self.proxy_port = proxy_port
        self.nodes = list(nodes) if nodes is not None else inventory_nodes()
        self.network = f"{project}-internal"
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
        """Its address on the private network (or, cut off from it, on its first one)."""
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

    def standard_url(self, node: str) -> str:
        """The node's standard node straight, not through the proxy."""
        return f"http://{self.address(self.container('standard', node))}:4001"

    # --- CouchDB as its admin ------------------------------------------------------------

    @property
    def admin_password(self) -> str:
        if self._password is None:
            secret = REPO / "build" / "secrets" / f"{self.project}-couchdb-admin"
            self._password = secret.read_text().strip()
        return self._password

    def couch(
        self, node: str, path: str, method: str = "GET", body: Any = None, timeout: float = 10
    ) -> tuple[int, Any]:
        """(status, JSON body) of a request to the node's CouchDB as its admin."""
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

    def holds(self, node: str, message_id: str) -> bool:
        return self.couch(node, f"/messages/{quote(message_id)}")[0] == 200

    def message_ids(self, node: str) -> set[str]:
        status, body = self.couch(node, "/messages/_all_docs")
        if status != 200:
            raise RuntimeError(f"{node}: _all_docs answered {status}: {body}")
        return {row["id"] for row in body["rows"] if not row["id"].startswith("_design/")}

    def put_message(self, node: str, body: dict[str, Any]) -> None:
        """A message document written straight into a node's CouchDB, as the node's store
        writes it (kuno.common.messages.Message: `seq` derived when the body has none)."""
        doc = Message(**body).to_document()
        status, answer = self.couch(node, f"/messages/{quote(body['id'])}", "PUT", doc)
        if status == 409:  # replication brought it first: fine if it is this very document
            status, answer = self.couch(node, f"/messages/{quote(body['id'])}")
            if status == 200 and {k: v for k, v in answer.items() if k != "_rev"} == doc:
                return
        if status not in (201, 202):
            raise RuntimeError(f"{node}: PUT {body['id']} answered {status}: {answer}")

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

    def replications(self, node: str) -> dict[str, str]:
        """Our replications on the node (ids kuno-...) and the state its _replicator shows."""
        status, body = self.couch(node, "/_replicator/_all_docs?include_docs=true")
        if status != 200:
            raise RuntimeError(f"{node}: _replicator answered {status}: {body}")
        return {
            row["id"]: row["doc"].get("_replication_state", "")
            for row in body["rows"]
            if row["id"].startswith(ID_PREFIX)
        }

    def expected_replications(self, node: str, nodes: list[str] | None = None) -> set[str]:
        """The full mesh's pulls on `node`: every database from every other of `nodes`."""
        return set(pull_ids(DATABASES, [peer for peer in (nodes or self.nodes) if peer != node]))

    def replications_running(self, node: str) -> bool:
        """The node has exactly the mesh's pulls and each of them runs (its state is one of
        kuno.common.replications.RUNNING_STATES: no settle time is asked here)."""
        states = self.replications(node)
        return set(states) == self.expected_replications(node) and all(
            state in RUNNING_STATES for state in states.values()
        )

    def healthy(self, node: str) -> bool:
        """The node's standard node answers /health 200 (its CouchDB reachable), asked directly."""
        try:
            with urllib.request.urlopen(f"{self.standard_url(node)}/health", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False
