"""kuno's alert rules, as the monitoring role renders them, under `promtool test rules`.

promtool is Debian's (scripts/setup-promtool, run by `make venv`; the same version as the
image images/prometheus builds). The role's own templates are rendered by Ansible with the
local inventory (entry point `rules`), so what is tested is what is deployed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_images import ANSIBLE_PLAYBOOK, REPO, ansible

PROMTOOL = REPO / ".venv" / "bin" / "promtool"
RULE_TESTS = Path(__file__).with_name("kuno-rules.test.yml")

PLAYBOOK = """
- name: Render the monitoring configuration
  hosts: monitoring
  gather_facts: false
  tasks:
    - name: Render
      ansible.builtin.include_role:
        name: monitoring
        tasks_from: rules.yml
"""


@pytest.fixture(scope="session")
def promtool() -> Path:
    if not PROMTOOL.exists():
        subprocess.run([str(REPO / "scripts" / "setup-promtool")], check=True, timeout=300)
    return PROMTOOL


@pytest.fixture(scope="session")
def render(tmp_path_factory: pytest.TempPathFactory):
    """render(name, **variables) -> the directory with prometheus.yml and kuno-rules.yml."""
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make venv")
    work = tmp_path_factory.mktemp("monitoring")
    (work / "render.yml").write_text(PLAYBOOK)

    def run(name: str, **variables: object) -> Path:
        (work / f"{name}.json").write_text(
            json.dumps({"monitoring_render_dir": str(work / name), **variables})
        )
        (work / name).mkdir()
        result = ansible(
            "-i", "inventories/local", str(work / "render.yml"), "-e", f"@{work / name}.json"
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        shutil.copy(RULE_TESTS, work / name / RULE_TESTS.name)
        return work / name

    return run


@pytest.fixture(scope="session")
def rendered(render) -> Path:
    """The local inventory's rules and configuration (pouchdb-server: no couchdb job)."""
    return render("defaults")


def promtool_run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def test_the_rules_pass_their_promtool_tests(promtool: Path, rendered: Path) -> None:
    checked = promtool_run(promtool, "check", "rules", "kuno-rules.yml", cwd=rendered)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=rendered)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_promtool_tests_catch_a_changed_threshold(promtool: Path, render) -> None:
    # The lag bound moved from 1000 to 2000 changes: the 1500 pending no longer fire.
    rendered = render("lag-2000", monitoring_alert_lag_changes=2000)
    tested = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=rendered)
    assert tested.returncode != 0
    assert "KunoReplicationLag" in tested.stdout + tested.stderr


def test_prometheus_scrapes_every_node_and_couchdb_only_where_it_has_metrics(
    rendered: Path, render
) -> None:
    standin = yaml.safe_load((rendered / "prometheus.yml").read_text())
    couchdb = yaml.safe_load(
        (render("couchdb", kuno_couchdb_flavour="couchdb") / "prometheus.yml").read_text()
    )
    jobs = {job["job_name"]: job for job in couchdb["scrape_configs"]}
    assert set(jobs) == {"prometheus", "kuno-master", "kuno-standard", "couchdb"}
    assert [c["labels"]["node"] for c in jobs["kuno-standard"]["static_configs"]] == [
        "node1",
        "node2",
        "node3",
    ]
    assert jobs["couchdb"]["metrics_path"] == "/_node/_local/_prometheus"
    # The password is read from a file, never written into the configuration.
    assert jobs["couchdb"]["basic_auth"] == {
        "username": "admin",
        "password_file": "/etc/prometheus/couchdb-password",
    }
    assert "couchdb" not in {job["job_name"] for job in standin["scrape_configs"]}


def test_every_query_of_the_grafana_dashboard_is_valid_promql(
    promtool: Path, tmp_path: Path
) -> None:
    dashboard = json.loads((REPO / "roles/monitoring/files/grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(queries) == len(dashboard["panels"]) >= 10
    # promtool parses each query as the expression of a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "dashboard-rules.yml").write_text(json.dumps(rules))
    checked = promtool_run(promtool, "check", "rules", "dashboard-rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout
