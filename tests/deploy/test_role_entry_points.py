"""The roles' front doors (issue 12 items 1 and 2), checked without Docker.

Playbooks enter a role only through an entry point its meta/argument_specs.yml declares
(Ansible validates the role's options there), a role reads no fact another role sets
unless it runs that role itself, a failed validation shows no password, and every
container name comes from one definition (filter_plugins/kuno_names.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from filter_plugins.kuno_names import container_name, container_names
from tests.deploy.conftest import ANSIBLE_PLAYBOOK, REPO
from tests.deploy.test_images import ansible

ROLES = REPO / "roles"
PLAYBOOKS = [
    REPO / "deploy.yml",
    REPO / "rollback.yml",
    *sorted((REPO / "playbooks").glob("*.yml")),
    *sorted((REPO / "playbooks" / "tasks").glob("*.yml")),
]
INCLUDES = ("include_role", "import_role")


def entry_points(role: str) -> set[str]:
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return set(specs["argument_specs"])


def tasks_of(node: Any) -> Iterator[dict[str, Any]]:
    """Every task in a list of plays or tasks, blocks, rescues and always included."""
    if isinstance(node, list):
        for item in node:
            yield from tasks_of(item)
    elif isinstance(node, dict):
        yield node
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            yield from tasks_of(node.get(key))


def role_calls(playbook: Path) -> Iterator[tuple[str, str]]:
    """(role, entry point) of every role a playbook or task file runs."""
    for task in tasks_of(yaml.safe_load(playbook.read_text())):
        for role in task.get("roles", []):
            yield (role["role"] if isinstance(role, dict) else role), "main"
        for key, args in task.items():
            if key.split(".")[-1] in INCLUDES:
                yield args["name"], args.get("tasks_from", "main")


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: str(p.relative_to(REPO)))
def test_playbooks_enter_roles_only_through_declared_entry_points(playbook: Path) -> None:
    for role, entry in role_calls(playbook):
        assert entry in entry_points(role), (
            f"{playbook.relative_to(REPO)}: role {role} entered by {entry!r}, "
            f"not one of its entry points {sorted(entry_points(role))}"
        )


def role_files(role: str) -> list[Path]:
    return [
        p
        for p in (ROLES / role).rglob("*")
        if p.suffix in (".yml", ".j2") and "meta" not in p.parts
    ]


def facts_set_by(role: str) -> set[str]:
    facts: set[str] = set()
    for path in (ROLES / role / "tasks").glob("*.yml"):
        for task in tasks_of(yaml.safe_load(path.read_text()) or []):
            facts |= set(task.get("ansible.builtin.set_fact", {}) or {})
    return {fact for fact in facts if not fact.startswith("_")}


def roles_run_by(role: str) -> set[str]:
    runs: set[str] = set()
    for path in (ROLES / role / "tasks").glob("*.yml"):
        for task in tasks_of(yaml.safe_load(path.read_text()) or []):
            runs |= {args["name"] for key, args in task.items() if key.split(".")[-1] in INCLUDES}
    return runs


def test_a_role_reads_only_facts_of_the_roles_it_runs() -> None:
    roles = sorted(p.name for p in ROLES.iterdir() if (p / "tasks").is_dir())
    for reader in roles:
        allowed = {reader} | roles_run_by(reader)
        # What the role's files do, not what their comments say.
        lines = (line for p in role_files(reader) for line in p.read_text().splitlines())
        text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        for writer in roles:
            if writer in allowed:
                continue
            for fact in facts_set_by(writer):
                assert not re.search(rf"\b{fact}\b", text), (
                    f"role {reader} reads {fact}, a fact of role {writer}: take it as an option"
                )


def test_a_failed_validation_shows_no_password(tmp_path: Path) -> None:
    """Ansible prints a failed entry point's argument spec, templated defaults included."""
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make venv")
    secret = "never-shown-" + os.urandom(8).hex()
    playbook = tmp_path / "enter.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Enter the master role with a bad option",
                    "hosts": "master",
                    "gather_facts": False,
                    "roles": [{"role": "master", "master_port": "not-a-port"}],
                }
            ]
        )
    )
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"kuno_couchdb_admin_password": secret, "kuno_release": "r1"}))
    result = ansible("-i", "inventories/local", str(playbook), "-e", f"@{variables}", timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "master_port" in output
    assert secret not in output


def test_container_names() -> None:
    assert container_name("kuno", "couchdb", "node1") == "kuno-couchdb-node1"
    assert container_name("kuno", "standard", "node2") == "kuno-standard-node2"
    assert container_name("kuno", "master") == "kuno-master"
    assert container_name("kuno", "proxy") == "kuno-proxy"
    assert container_names(["a", "b"], "p", "couchdb") == ["p-couchdb-a", "p-couchdb-b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("kuno", "couchdb"), "needs its storage node"),
        (("kuno", "master", "node1"), "one master per project"),
        (("kuno", "db", "node1"), "unknown role 'db'"),
        (("", "master"), "project is empty"),
    ],
)
def test_container_names_refuse_what_names_no_container(args: tuple[str, ...], message: str):
    with pytest.raises(ValueError, match=message):
        container_name(*args)


# Containers are named by kuno_container_name only; the CouchDB volume keeps its own
# written-out name (a renamed container must not get a new, empty volume).
WRITTEN_OUT_NAME = re.compile(
    r"kuno_project \}\}-(couchdb|standard|master|proxy|prometheus)"
    r"|kuno_project ~ '-(couchdb|standard|master|proxy|prometheus)'"
)


def test_container_names_are_written_in_one_place() -> None:
    # meta/argument_specs.yml mirrors defaults/main.yml, as documentation.
    roles = (p for p in ROLES.rglob("*") if p.suffix in (".yml", ".j2") and "meta" not in p.parts)
    files = [*PLAYBOOKS, *roles]
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if WRITTEN_OUT_NAME.search(line) and "volume" not in line
    ]
    assert found == []


SET_FILTER = re.compile(r"\|\s*(difference|union|intersect|symmetric_difference)\b")


def test_no_value_takes_a_set_filters_order() -> None:
    """Ansible's set filters return a set's order, which changes between runs (hash
    randomisation): a list that reaches a container's environment or a file would then
    differ on a re-run, and deploy.yml would not report changed=0."""
    files = [*PLAYBOOKS, *(p for p in ROLES.rglob("*") if p.suffix in (".yml", ".j2"))]
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SET_FILTER.search(line)
    ]
    assert found == []
