"""`ansible-playbook deploy.yml` against the real Docker engine here, as ops run it.

One scenario, in order (each test builds on the state the previous one left): a cold
deploy, an idempotent re-run and a check-mode run that change nothing, verify.yml, a new
release rolled out one storage node at a time while messages are being sent (none is
lost), rollback.yml (every message on every node, delivered online again), a failed
start, a fourth storage node added (the good deploy after the failed one) and removed,
and the degraded mode (online delivery, nothing stored) and its end. The one deploy
suite: the molecule scenarios (molecule/) break a deployed system in other ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Iterator

import pytest

from kuno.client.api import KunoClient
from kuno.client.crypto import KeyPair
from tests.deploy.conftest import COUCHDB_CHECKPOINT_INTERVAL_MS, PROJECT, Deployment, docker
from tests.support.pouchdb import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NODES = ["node1", "node2", "node3"]
PASSWORD = "correct horse battery staple"


def running_image(container: str) -> str:
    return docker("inspect", "-f", "{{.Config.Image}}", container)


def image_id(container_or_image: str) -> str:
    """The id (sha256:...) of a container's image, or of an image by tag."""
    if ":" in container_or_image:
        return docker("image", "inspect", "-f", "{{.Id}}", container_or_image)
    return docker("inspect", "-f", "{{.Image}}", container_or_image)


def container_ids(containers: list[str]) -> dict[str, str]:
    """Each container's id: a re-created container has a new one."""
    return {name: docker("inspect", "-f", "{{.Id}}", name) for name in containers}


def project_containers() -> dict[str, str]:
    """Every container of the project (running or not), name -> id."""
    lines = docker(
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        f"label=kuno.project={PROJECT}",
        "--format",
        "{{.Names}} {{.ID}}",
    )
    return dict(line.split() for line in lines.splitlines())


def image_ids() -> set[str]:
    """Every image on the engine, by id: one built, pulled or removed changes the set."""
    return set(docker("images", "-aq", "--no-trunc").split())


# Identical in both releases of these tests: no playbook may re-create them.
UNCHANGED = [f"{PROJECT}-couchdb-{node}" for node in NODES] + [f"{PROJECT}-proxy"]


def env_of(container: str) -> dict[str, str]:
    lines = docker("inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", container)
    return dict(line.split("=", 1) for line in lines.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def deployed(deployment: Deployment) -> Deployment:
    run = deployment.deploy()
    deployment.log.append(f"cold deploy (images present or built): {run.seconds:.1f} s")
    return deployment


def test_a_cold_deploy_runs_every_container_healthy_behind_the_proxy(deployed: Deployment) -> None:
    for node in NODES:
        couchdb = f"{PROJECT}-couchdb-{node}"
        assert docker("inspect", "-f", "{{.State.Running}}", couchdb) == "true"
        # couchdb_env reaches the container beside the admin the role sets.
        env = env_of(couchdb)
        assert env["KUNO_CHECKPOINT_INTERVAL_MS"] == str(COUCHDB_CHECKPOINT_INTERVAL_MS)
        assert "COUCHDB_USER" in env
        status, health = deployed.proxy(f"/{node}/health")
        assert status == 200, health
        assert health["node"] == node
    # The full mesh: every node pulls both databases from both others.
    for node in NODES:
        assert set(deployed.replications(node)) == deployed.expected_replications(node)


def test_a_second_run_changes_nothing(deployed: Deployment) -> None:
    run = deployed.deploy()
    deployed.log.append(f"idempotent re-run: {run.seconds:.1f} s")
    assert run.changed == 0, run.changed_tasks()


def test_check_mode_on_the_deployed_system_reports_no_change(deployed: Deployment) -> None:
    run = deployed.deploy("--check", "--diff")
    assert run.changed == 0, run.changed_tasks()


def test_verify_passes_and_names_the_node_when_one_is_down(deployed: Deployment) -> None:
    run = deployed.run("playbooks/verify.yml")
    assert run.returncode == 0, run.output[-4000:]

    docker("stop", f"{PROJECT}-standard-node2")
    try:
        run = deployed.run("playbooks/verify.yml", "-e", "verify_health_timeout=2")
        assert run.returncode != 0
        assert "node2: not running: standard" in run.output
    finally:
        docker("start", f"{PROJECT}-standard-node2")


class Sender:
    """Sends messages through the proxy from a thread of its own until stopped.

    Like a real client it sends each message until it is acknowledged, reconnecting when
    the master restarts (same message id: the servers dedupe).
    """

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.acked: list[str] = []
        self.retries: list[str] = []
        self.lost: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        nodes = [f"{self.base}/{node}" for node in NODES]
        alice = KunoClient(self.base, nodes)
        bob = KunoClient(self.base, nodes)
        socket = None
        try:
            names = {who: f"{who}-{secrets.token_hex(4)}" for who in ("alice", "bob")}
            for client, who in ((alice, "alice"), (bob, "bob")):
                await client.register(names[who], PASSWORD, KeyPair.generate())
                await client.login(names[who], PASSWORD)
            while not self._stop.is_set():
                outgoing = await alice.seal(names["bob"], f"sent at {time.time()}")
                deadline = time.monotonic() + 90
                while True:
                    try:
                        if socket is None:
                            socket = alice.connect()
                            await socket.open()
                        ack = await socket.send_sealed(outgoing, within=10)
                        self.acked.append(ack.id)
                        break
                    except Exception as exc:  # a retry, as a client does
                        self.retries.append(repr(exc))
                        if socket is not None:
                            with contextlib.suppress(Exception):
                                await socket.close()
                            socket = None
                        if time.monotonic() > deadline:
                            self.lost.append(outgoing.id)
                            break
                        await asyncio.sleep(0.5)
                await asyncio.sleep(0.1)
        finally:
            if socket is not None:
                with contextlib.suppress(Exception):
                    await socket.close()
            await alice.close()
            await bob.close()

    def __enter__(self) -> Sender:
        self._thread.start()
        wait_until(lambda: self.acked or self.lost or not self._thread.is_alive(), 60)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)


@pytest.fixture(scope="module")
def second_release(deployed: Deployment) -> Iterator[str]:
    """A new release: its own image tags (built) and a configuration change."""
    first = deployed.release
    second = f"{first}-next"
    yield second
    for image in ("standard", "master"):
        docker("rmi", f"kuno/{image}:{second}", check=False)
    deployed.release = first


def test_a_new_release_restarts_storage_nodes_one_at_a_time_losing_no_message(
    deployed: Deployment, second_release: str
) -> None:
    before = {node: running_image(f"{PROJECT}-standard-{node}") for node in NODES}
    with Sender(deployed.proxy_port) as sender:
        run = deployed.deploy(
            "-e", f"kuno_release={second_release}", "-e", "standard_node_log_level=debug"
        )
        time.sleep(1)
    deployed.log.append(f"new release (app images built): {run.seconds:.1f} s")
    assert sender.acked, sender.retries[:5]
    assert not sender.lost, sender.retries[-5:]
    deployed.log.append(
        f"messages acknowledged during the new release: {len(sender.acked)}, "
        f"resends: {len(sender.retries)}"
    )
    for node in NODES:
        assert running_image(f"{PROJECT}-standard-{node}") == f"kuno/standard:{second_release}"
        assert before[node] != f"kuno/standard:{second_release}"
    # One storage node at a time: each standard node started after the previous one was up.
    started = [
        docker("inspect", "-f", "{{.State.StartedAt}}", f"{PROJECT}-standard-{node}")
        for node in NODES
    ]
    assert started == sorted(started), started
    # Every acknowledged message is stored on every node (after replication catches up).
    acked = set(sender.acked)
    for node in NODES:
        wait_until(lambda node=node: acked <= deployed.message_ids(node), 30)
    for node in NODES:
        record = deployed.record(node)
        assert record["current"]["release"] == second_release, node
        assert record["previous"]["release"] == deployed.release, node


def test_rollback_returns_to_the_previous_release_without_rebuilding(
    deployed: Deployment, second_release: str
) -> None:
    stored = deployed.message_ids("node1")
    before = container_ids(UNCHANGED)
    containers_before, images_before = project_containers(), image_ids()
    run = deployed.run("rollback.yml")
    deployed.log.append(f"rollback: {run.seconds:.1f} s, changed={run.changed}")
    assert run.returncode == 0, run.output[-4000:]
    # Only what differs between the releases is re-created (the recorded image is named
    # by id, the running one by tag: the same image): the standard nodes (their image and
    # log level), the master at most (its image), nothing else; no container added or gone.
    assert container_ids(UNCHANGED) == before, run.changed_tasks()
    containers_after = project_containers()
    assert set(containers_after) == set(containers_before)
    recreated = {name for name, id_ in containers_after.items() if containers_before[name] != id_}
    standard = {f"{PROJECT}-standard-{node}" for node in NODES}
    assert standard <= recreated <= standard | {f"{PROJECT}-master"}, run.changed_tasks()
    # Nothing rebuilt, pulled or removed: the engine holds the same images as before.
    assert "Build the images" not in run.output
    assert image_ids() == images_before
    # The first release's images, by id (the record's), so a rebuilt tag cannot change them.
    first_standard = image_id(f"kuno/standard:{deployed.release}")
    assert first_standard != image_id(f"kuno/standard:{second_release}")
    for node in NODES:
        container = f"{PROJECT}-standard-{node}"
        assert env_of(container)["KUNO_LOG_LEVEL"] == "info"
        assert running_image(container).startswith("sha256:")
        assert image_id(container) == first_standard, node
        status, health = deployed.proxy(f"/{node}/health")
        assert status == 200, health
    assert image_id(f"{PROJECT}-master") == image_id(f"kuno/master:{deployed.release}")
    # Data untouched: every message stored under either release is on every node.
    assert stored <= deployed.message_ids("node1")
    for node in NODES:
        wait_until(lambda node=node: stored <= deployed.message_ids(node), 30)
    for node in NODES:
        record = deployed.record(node)
        assert record["current"]["release"] == deployed.release, node
        assert record["previous"]["release"] == second_release, node
    # Delivered online again, and stored on every node.
    acks = asyncio.run(
        deployed.with_users(
            lambda alice, bob: deployed.deliver_online(
                alice, bob, [f"after the rollback #{n}" for n in range(3)], stored=True
            )
        )
    )
    for node in NODES:
        assert {ack.id for ack in acks} <= deployed.message_ids(node), node


def test_roll_forward_and_back_recreate_only_what_differs_and_deploy_then_changes_nothing(
    deployed: Deployment, second_release: str
) -> None:
    before = container_ids(UNCHANGED)
    run = deployed.run("rollback.yml")  # forward again, to the second release
    deployed.log.append(f"roll-forward: {run.seconds:.1f} s, changed={run.changed}")
    assert run.returncode == 0, run.output[-4000:]
    assert deployed.record("node1")["current"]["release"] == second_release
    assert container_ids(UNCHANGED) == before, run.changed_tasks()

    run = deployed.deploy(
        "-e", f"kuno_release={second_release}", "-e", "standard_node_log_level=debug"
    )
    deployed.log.append(
        f"deploy right after roll-forward: {run.seconds:.1f} s, changed={run.changed}"
    )
    assert run.changed == 0, run.changed_tasks()

    run = deployed.run("rollback.yml")  # back to the first release
    deployed.log.append(f"rollback again: {run.seconds:.1f} s, changed={run.changed}")
    assert run.returncode == 0, run.output[-4000:]
    assert container_ids(UNCHANGED) == before, run.changed_tasks()
    run = deployed.deploy()
    deployed.log.append(f"deploy right after rollback: {run.seconds:.1f} s, changed={run.changed}")
    assert run.changed == 0, run.changed_tasks()
    assert container_ids(UNCHANGED) == before


def test_a_failed_start_keeps_the_previous_release_and_names_node_and_cause(
    deployed: Deployment,
) -> None:
    before = env_of(f"{PROJECT}-standard-node1")
    run = deployed.run(
        "deploy.yml",
        "-e",
        '{"standard_node_env": {"KUNO_PAGE_LIMIT": "0"}, "standard_node_health_timeout": 8}',
    )
    assert run.returncode != 0
    assert "node1: standard node: container kunotest-standard-node1" in run.output
    assert "Previous release restored" in run.output
    assert "KUNO_PAGE_LIMIT" in run.output  # the cause, from the service's own log line
    # node1 runs its previous container again; node2 and node3 were never touched.
    assert env_of(f"{PROJECT}-standard-node1") == before
    for node in NODES:
        status, health = deployed.proxy(f"/{node}/health")
        assert status == 200, (node, health)
    # A good deploy after it is fine: test_a_fourth_node_joins_the_mesh_and_leaves_it's.


def test_a_fourth_node_joins_the_mesh_and_leaves_it(deployed: Deployment, tmp_path) -> None:
    extra = tmp_path / "node4.yml"
    extra.write_text("all:\n  children:\n    couchdb_nodes:\n      hosts:\n        node4:\n")
    deployed.inventories.append(extra)
    try:
        # Right after the failed start: the good deploy, which node4 joins.
        deployed.deploy()
        assert "KUNO_PAGE_LIMIT" not in env_of(f"{PROJECT}-standard-node1")
        nodes = [*NODES, "node4"]
        for node in nodes:
            assert set(deployed.replications(node)) == deployed.expected_replications(node, nodes)
        assert deployed.proxy("/node4/health")[0] == 200
    finally:
        deployed.inventories.remove(extra)
    deployed.deploy()
    assert not docker(
        "ps",
        "-aq",
        "--filter",
        "label=kuno.node=node4",
        "--filter",
        f"label=kuno.project={PROJECT}",
    )
    # The three nodes' mesh whole again, each node healthy behind the proxy; verify.yml on
    # this state rides on test_storage_can_be_disabled_and_restored's run (the next test:
    # its disable and restore leave the inventory and the mesh as they are).
    for node in NODES:
        assert not any("node4" in rid for rid in deployed.replications(node))
        assert deployed.replications_running(node), (node, deployed.replications(node))
        assert deployed.proxy(f"/{node}/health")[0] == 200, node


def test_storage_can_be_disabled_and_restored(deployed: Deployment) -> None:
    run = deployed.run("playbooks/disable_storage.yml")
    assert run.returncode == 0, run.output[-4000:]
    assert env_of(f"{PROJECT}-master")["KUNO_STORAGE_ENABLED"] == "false"
    running = "{{.State.Running}}"
    for node in NODES:
        assert docker("inspect", "-f", running, f"{PROJECT}-standard-{node}") == "false"
        # CouchDB stays up: it holds the master's accounts.
        assert docker("inspect", "-f", running, f"{PROJECT}-couchdb-{node}") == "true"
    for node in NODES:
        wait_until(lambda node=node: deployed.couch(node, "/")[0] == 200, 60, 1)
    # Online delivery goes on, acknowledged as not stored.
    unstored = asyncio.run(
        deployed.with_users(
            lambda alice, bob: deployed.deliver_online(
                alice, bob, [f"storage disabled #{n}" for n in range(5)], stored=False
            )
        )
    )

    couchdb = [f"{PROJECT}-couchdb-{node}" for node in NODES]
    before = container_ids(couchdb)
    run = deployed.run("playbooks/restore_storage.yml")
    assert run.returncode == 0, run.output[-4000:]
    # CouchDB kept running through the degraded mode: restoring leaves it alone.
    assert container_ids(couchdb) == before, run.changed_tasks()
    assert env_of(f"{PROJECT}-master")["KUNO_STORAGE_ENABLED"] == "true"
    # Also verify.yml after node4 left (test_a_fourth_node_joins_the_mesh_and_leaves_it).
    run = deployed.run("playbooks/verify.yml")
    assert run.returncode == 0, run.output[-4000:]
    # Storage works again: messages to an offline recipient reach every node; none of
    # those sent while it was disabled is on any.
    acks = asyncio.run(deployed.with_users(send_offline))
    stored = {ack.id for ack in acks}
    for node in NODES:
        wait_until(lambda node=node: stored <= deployed.message_ids(node), 30)
        assert not {ack.id for ack in unstored} & deployed.message_ids(node), node
        assert deployed.replications_running(node), (node, deployed.replications(node))


async def send_offline(alice: KunoClient, bob: KunoClient) -> list:
    """alice sends bob (offline) 10 messages, each acknowledged as stored on a node at least."""
    async with alice.connect() as socket:
        acks = [await socket.send(bob.username, f"after the restore #{n}") for n in range(10)]
    for ack in acks:
        assert not ack.delivered and ack.stored >= 1, ack
    return acks
