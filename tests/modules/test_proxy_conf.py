"""The proxy role's nginx configuration as rendered: every error nginx answers itself is
the API's JSON error, and the services' own errors are not intercepted. The deployed
behaviour is tests/deploy/test_proxy_errors.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.modules.helpers import REPO, Ansible

ROLE = REPO / "roles" / "proxy"


@pytest.fixture(scope="module")
def conf(ansible: Ansible, work_root: Path) -> str:
    dest = work_root / "kuno.conf"
    run = ansible.run(
        [
            {
                "name": "defaults",
                "ansible.builtin.include_vars": str(ROLE / "defaults" / "main.yml"),
            },
            {"name": "vars", "ansible.builtin.include_vars": str(ROLE / "vars" / "main.yml")},
            {
                "name": "inventory",
                "ansible.builtin.set_fact": {
                    "kuno_project": "kuno",
                    "kuno_network": "kuno-internal",
                    "kuno_proxy_image": "kuno/proxy:bookworm",
                    "kuno_root": str(work_root),
                    "proxy_storage_nodes": ["node1", "node2", "node3"],
                },
            },
            {
                "name": "render",
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates" / "kuno.conf.j2"),
                    "dest": str(dest),
                },
            },
        ]
    )
    assert run.returncode == 0, run.output
    return dest.read_text()


def test_every_error_nginx_answers_has_a_json_page(conf: str) -> None:
    pages = dict(re.findall(r"error_page (\d+) (\S+);", conf))
    assert {"400", "404", "413", "414", "494", "502", "504"} <= set(pages)
    for status, uri in pages.items():
        # An internal URI, not a named location: nginx cannot redirect a request whose
        # request line it failed to parse (GET /api/%00) to a named location.
        assert uri == f"/.kuno/errors/{status}"
        block = re.search(
            rf"location = {re.escape(uri)} {{ internal; return {status} '(.*)\\n'; }}", conf
        )
        assert block, f"no page for {status}"
        assert "$" not in block[1], "nginx would read a variable"
        body = json.loads(block[1])
        assert set(body) == {"error", "reason"} and all(body.values()), body
    pages_block = conf[conf.index("location ^~ /.kuno/errors/") :]
    assert "default_type application/json;" in pages_block.split("location =")[0]
    assert "types { }" in pages_block.split("location =")[0]


def test_the_services_own_errors_pass_through(conf: str) -> None:
    assert not re.search(r"^\s*proxy_intercept_errors\s+on", conf, re.MULTILINE)
    assert json.loads(
        re.search(r"return 413 '(.*)\\n';", conf)[1]  # type: ignore[index]
    ) == {"error": "too_large", "reason": "the request body is larger than the proxy accepts (1m)"}
    for node in ("node1", "node2", "node3"):
        assert f"location /{node}/ {{" in conf


def test_operators_details_stay_off_the_proxy(conf: str) -> None:
    """Through the proxy a node's health is its /status ({"node", "status"}) and its
    metrics are the proxy's 404; tests/deploy/test_proxy_redaction.py asks the proxy."""
    for node in ("node1", "node2", "node3"):
        health = re.search(rf"location = /{node}/health {{(.*?)}}", conf, re.DOTALL)
        assert health, f"no exact location for /{node}/health"
        assert re.search(rf"proxy_pass http://\$kuno_{node}/status;", health[1]), health[1]
        metrics = re.search(rf"location = /{node}/metrics {{(.*?)}}", conf, re.DOTALL)
        assert metrics and metrics[1].split() == ["return", "404;"], metrics
