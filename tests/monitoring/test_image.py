"""The Prometheus image: built here from Debian's package or pulled, like the other
third-party images, and only where a host of group monitoring is in the play."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_images import ANSIBLE_PLAYBOOK, ansible
from tests.deploy.test_images import PLAYBOOK as DECIDE

# The images role's decision, as tests/deploy/test_images.py reads it, with the host of
# group monitoring in the play (both hosts write the same decision).
PLAYBOOK = DECIDE.replace("hosts: node1\n", "hosts: node1:prometheus\n")


def decide(tmp_path: Path, limit: str, **extra: Any) -> dict[str, Any]:
    assert PLAYBOOK != DECIDE
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make venv")
    (tmp_path / "decide.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(
        json.dumps({"decision_out": str(tmp_path / "out.json"), **extra})
    )
    result = ansible(
        "-i",
        "inventories/local",
        "-l",
        limit,
        str(tmp_path / "decide.yml"),
        "-e",
        f"@{tmp_path / 'vars.json'}",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_built_from_debian_here_with_the_monitoring_host(tmp_path: Path) -> None:
    decision = decide(tmp_path, "node1,prometheus")
    assert "kuno/prometheus:bookworm" in decision["builds"]
    assert decision["pulls"] == []


def test_pulled_where_the_inventory_says_pull(tmp_path: Path) -> None:
    decision = decide(
        tmp_path,
        "node1,prometheus",
        kuno_prometheus_image="prom/prometheus:v2.53.3",
        kuno_prometheus_image_source="pull",
    )
    assert decision["pulls"] == ["prom/prometheus:v2.53.3"]
    assert "prom/prometheus:v2.53.3" not in decision["builds"]


def test_not_made_when_no_monitoring_host_is_in_the_play(tmp_path: Path) -> None:
    decision = decide(tmp_path, "node1")
    assert not [name for name in decision["builds"] + decision["pulls"] if "prometheus" in name]
