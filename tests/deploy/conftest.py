"""A deployment of the whole system with the real Docker engine, under a project of its own.

Everything the tests make is named `kunotest-...` (containers, networks, volumes) and
lives under a temporary kuno_root, so a `make deploy` on the same machine is left alone;
all of it is removed at the end, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.pouchdb import free_port
from tests.support.system import REPO, Deployed, docker, docker_answers, release_version

__all__ = ["REPO", "Deployment", "docker", "docker_answers"]

ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
PROJECT = "kunotest"
# Given to the CouchDB containers through couchdb_env (30 s is the image's default).
COUCHDB_CHECKPOINT_INTERVAL_MS = 20000
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        return {
            m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
            for m in RECAP.finditer(self.output)
        }

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap().values())

    def changed_tasks(self) -> list[str]:
        """The names of the tasks that reported a change, for a failing assertion."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line
            elif line.startswith("changed:"):
                tasks.append(f"{current} {line}")
        return tasks


class Deployment(Deployed):
    """The session's deployment: deploy.yml and the other playbooks run against it with the
    session's extra variables (`run`, `deploy`), and the system they make (`Deployed`)."""

    def __init__(self, root: Path, extra_vars_file: Path, release: str, proxy_port: int) -> None:
        super().__init__(PROJECT, proxy_port)
        self.root = root
        self.extra_vars_file = extra_vars_file
        self.release = release
        self.inventories: list[Path] = [REPO / "inventories" / "local"]
        self.log: list[str] = []

    def run(self, playbook: str, *args: str, timeout: float = 900) -> Run:
        command = [str(ANSIBLE_PLAYBOOK), playbook, "-e", f"@{self.extra_vars_file}"]
        for inventory in self.inventories:
            command += ["-i", str(inventory)]
        command += list(args)
        env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        started = time.monotonic()
        result = subprocess.run(
            command,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        run = Run(result.returncode, result.stdout + result.stderr, time.monotonic() - started)
        self.log.append(f"{' '.join(command[1:])}: rc={run.returncode} in {run.seconds:.1f} s")
        return run

    def deploy(self, *args: str) -> Run:
        run = self.run("deploy.yml", *args)
        assert run.returncode == 0, run.output[-6000:]
        return run

    def record(self, host: str) -> dict[str, Any]:
        return json.loads((self.root / "releases" / f"{host}.json").read_text())

    def proxy(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.proxy_port}{path}", timeout=10
            ) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def remove_everything(self) -> None:
        """Containers, networks and volumes of the project, the host directory, test images."""
        containers = docker("ps", "-aq", "--filter", f"label=kuno.project={PROJECT}", check=False)
        if containers:
            docker("rm", "-f", *containers.split(), check=False)
        for network in (f"{PROJECT}-internal", f"{PROJECT}-public"):
            docker("network", "rm", network, check=False)
        volumes = docker("volume", "ls", "-q", "--filter", f"label=kuno.project={PROJECT}")
        if volumes:
            docker("volume", "rm", "-f", *volumes.split(), check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment for all of tests/deploy, removed after its last test (so its
    containers do not run on beside the tests after it)."""
    if not docker_answers():
        pytest.skip("no Docker engine answers (scripts/setup-docker starts one)")
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make venv")
    root = tmp_path_factory.mktemp("kunotest-root")
    release = release_version()
    proxy_port = free_port()
    extra = root.parent / "kunotest-vars.json"
    # Pinned for the whole session: other edits of the tree must not make a new release.
    extra.write_text(
        json.dumps(
            {
                "kuno_project": PROJECT,
                "kuno_root": str(root),
                "kuno_release": release,
                "proxy_http_port": proxy_port,
                # A number, as an inventory would give it: the role hands Docker a string.
                "couchdb_env": {"KUNO_CHECKPOINT_INTERVAL_MS": COUCHDB_CHECKPOINT_INTERVAL_MS},
            }
        )
    )
    deployment = Deployment(root, extra, release, proxy_port)
    deployment.remove_everything()
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield deployment
    finally:
        deployment.remove_everything()
        print("\n".join(["", "deployment runs:", *deployment.log]))


def proxy_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/node1/health", timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def proxied(deployment: Deployment) -> Deployment:
    """The session's deployment as the tests before left it; deployed here when they did not
    (a module run alone)."""
    if not proxy_answers(deployment.proxy_port):
        run = deployment.deploy()
        deployment.log.append(f"deploy (the proxy did not answer): {run.seconds:.1f} s")
    return deployment
