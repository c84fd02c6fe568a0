"""The images role: which image is built and which pulled, and check mode on a fresh controller."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import ANSIBLE_PLAYBOOK, REPO, docker, docker_answers

pytestmark = pytest.mark.slow  # each case is an ansible-playbook run

PLAYBOOK = """
- name: Decide which images are built and which pulled
  hosts: node1
  gather_facts: false
  tasks:
    - name: Check the image settings
      ansible.builtin.include_role:
        name: images
        tasks_from: preflight.yml
        public: true
    - name: Keep the decision
      ansible.builtin.copy:
        content: >-
          {{ {'pulls': _images_pulls, 'builds': _images_builds | map(attribute='name') | list,
              'base': _images_need_base} | to_json }}
        dest: "{{ decision_out }}"
        mode: "0600"
      changed_when: false
"""


def ansible(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), *args],
        cwd=REPO,
        env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def decide(tmp_path_factory: pytest.TempPathFactory):
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make venv")
    root = tmp_path_factory.mktemp("images")
    playbook = root / "decide.yml"
    playbook.write_text(PLAYBOOK)

    def run(name: str, **extra: Any) -> dict[str, Any]:
        out = root / f"{name}.json"
        variables = root / f"{name}-vars.json"
        variables.write_text(json.dumps({"decision_out": str(out), **extra}))
        # The local inventory's settings (build everything), node1 only.
        result = ansible(
            "-i", "inventories/local", "-l", "node1", str(playbook), "-e", f"@{variables}"
        )
        decision = json.loads(out.read_text()) if result.returncode == 0 else {}
        return {"rc": result.returncode, "output": result.stdout + result.stderr, **decision}

    return run


def test_build_makes_every_image_here(decide) -> None:
    decision = decide("build")
    assert decision["rc"] == 0, decision["output"][-3000:]
    assert decision["pulls"] == []
    assert "kuno/pouchdb-server:4.2.0" in decision["builds"]
    assert decision["base"] is True


def test_apps_built_here_run_the_official_couchdb_image_pulled(decide) -> None:
    decision = decide(
        "couchdb-pulled",
        kuno_couchdb_image="couchdb:3.5.1",
        kuno_couchdb_flavour="couchdb",
        kuno_couchdb_image_source="pull",
    )
    assert decision["rc"] == 0, decision["output"][-3000:]
    assert decision["pulls"] == ["couchdb:3.5.1"]
    assert "couchdb:3.5.1" not in decision["builds"]
    assert "kuno/pouchdb-server:4.2.0" not in decision["builds"]
    assert "kuno/python:bookworm" in decision["builds"]
    assert any(name.startswith("kuno/standard:") for name in decision["builds"])
    assert decision["base"] is True


def test_pull_builds_only_the_apps_and_needs_no_base(decide) -> None:
    decision = decide("pull", kuno_image_source="pull")
    assert decision["rc"] == 0, decision["output"][-3000:]
    assert decision["pulls"] == [
        "kuno/python:bookworm",
        "kuno/pouchdb-server:4.2.0",
        "kuno/proxy:bookworm",
    ]
    assert sorted(name.split(":")[0] for name in decision["builds"]) == [
        "kuno/master",
        "kuno/standard",
    ]
    assert decision["base"] is False


def test_an_unknown_source_is_refused_naming_it(decide) -> None:
    decision = decide("bad", kuno_couchdb_image_source="fetch")
    assert decision["rc"] != 0
    assert "images_<python|couchdb|proxy>_source must be build or pull" in decision["output"]
    assert "fetch" in decision["output"]


@pytest.mark.docker
def test_check_mode_on_a_controller_that_never_deployed_predicts_and_makes_nothing(
    tmp_path: Path,
) -> None:
    if not docker_answers():
        pytest.skip("no Docker engine answers (scripts/setup-docker starts one)")
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make venv")
    fresh = tmp_path / "controller"  # no wheelhouse, no packed node_modules
    release = f"checkmode-{secrets.token_hex(4)}"
    base = f"kuno/base-checkmode:{secrets.token_hex(4)}"  # absent: debootstrap predicted
    variables = tmp_path / "vars.json"
    variables.write_text(
        json.dumps(
            {
                "kuno_project": "kunocheck",
                "kuno_root": str(tmp_path / "root"),
                "kuno_release": release,
                "images_controller_dir": str(fresh),
                "images_base": base,
            }
        )
    )
    result = ansible(
        "-i", "inventories/local", "playbooks/images.yml", "--check", "-e", f"@{variables}"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"{base} would be made with debootstrap" in output
    assert f"kuno/standard:{release} would be built" in output
    assert f"kuno/master:{release} would be built" in output
    # Nothing was made: no directory, no file, no image.
    assert not fresh.exists()
    assert not (tmp_path / "root").exists()
    assert docker("images", "-q", f"kuno/standard:{release}") == ""
    assert docker("images", "-q", base) == ""
