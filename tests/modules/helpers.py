"""Run the couchdb_* modules the way a playbook does, and load their code for unit tests."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "library"
MODULE_UTILS = REPO / "module_utils"
FILTER_PLUGINS = REPO / "filter_plugins"
DOC_FRAGMENTS = REPO / "doc_fragments"
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
BIN = Path(sys.executable).parent


def load_module_utils(name: str = "couchdb") -> ModuleType:
    """module_utils/<name>.py under the name the modules import it by (ansible.module_utils.<name>),
    after the module_utils it imports."""
    for needed in {"couchdb_replication": ("replications", "couchdb")}.get(name, ()):
        load_module_utils(needed)
    qualified = f"ansible.module_utils.{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, MODULE_UTILS / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
    return sys.modules[qualified]


def load_library(name: str) -> ModuleType:
    """A module of library/ as a Python module (its main() is not run)."""
    load_module_utils("couchdb_replication")
    spec = importlib.util.spec_from_file_location(f"kuno_library_{name}", LIBRARY / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class PlaybookRun:
    returncode: int
    stdout: str
    stderr: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, task_name: str) -> dict[str, Any]:
        return self.results[task_name]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Ansible:
    """ansible-playbook on localhost (connection local) with the repository's modules."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def env(self, callback: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ANSIBLE_LIBRARY=str(LIBRARY),
            ANSIBLE_MODULE_UTILS=str(MODULE_UTILS),
            ANSIBLE_FILTER_PLUGINS=str(FILTER_PLUGINS),
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
            ANSIBLE_STDOUT_CALLBACK=callback,
            ANSIBLE_LOCALHOST_WARNING="false",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
            ANSIBLE_RETRY_FILES_ENABLED="false",
            ANSIBLE_NOCOLOR="true",
            ANSIBLE_HOME=str(self.workdir / "home"),
            ANSIBLE_LOCAL_TEMP=str(self.workdir / "tmp"),
            # No ansible.cfg of the repository or the user may change what is tested.
            ANSIBLE_CONFIG=str(self.workdir / "ansible.cfg"),
        )
        return env

    def run(
        self,
        tasks: list[dict[str, Any]] | None = None,
        *,
        playbook: Path | None = None,
        check: bool = False,
        diff: bool = False,
        verbosity: int = 0,
        extra_vars: dict[str, Any] | None = None,
        json_output: bool = True,
    ) -> PlaybookRun:
        """Run tasks (each with a unique name) or a playbook file; results by task name."""
        if playbook is None:
            assert tasks is not None
            self._count += 1
            playbook = self.workdir / f"playbook-{self._count}.yml"
            play = {"hosts": "localhost", "gather_facts": False, "tasks": tasks}
            playbook.write_text(json.dumps([play], indent=2))  # JSON is YAML
        command = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        if verbosity:
            command.append("-" + "v" * verbosity)
        if extra_vars:
            command += ["--extra-vars", json.dumps(extra_vars)]
        callback = "ansible.posix.json" if json_output else "default"
        process = subprocess.run(
            command,
            cwd=self.workdir,
            env=self.env(callback),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        run = PlaybookRun(process.returncode, process.stdout, process.stderr)
        if json_output:
            report = json.loads(process.stdout)
            for play in report["plays"]:
                for task in play["tasks"]:
                    run.results[task["task"]["name"]] = task["hosts"].get("localhost", {})
            run.stats = report["stats"].get("localhost", {})
        return run


def delete_twice(ansible: Ansible, task: Callable[..., dict], server: Any, db: str) -> PlaybookRun:
    """`task` with state absent run as "delete" then "delete again": asserts the run passed,
    the first changed and the second did not; returns the run."""
    run = ansible.run(
        [
            task("delete", server, db, state="absent"),
            task("delete again", server, db, state="absent"),
        ]
    )
    assert run.returncode == 0, run.output
    assert run["delete"]["changed"] is True
    assert run["delete again"]["changed"] is False
    return run
