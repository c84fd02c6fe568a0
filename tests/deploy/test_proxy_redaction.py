"""Through the deployed proxy a node's health says only its status and its metrics are not
served; on the private network both keep their details (issue 15)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.deploy.conftest import PROJECT, Deployment, docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:  # nothing deployed yet
        return 0, str(exc).encode()


def test_health_through_the_proxy_is_the_status_only(deployment: Deployment) -> None:
    if get(f"http://127.0.0.1:{deployment.proxy_port}/node1/health")[0] != 200:
        deployment.deploy()
    for node in ("node1", "node2", "node3"):
        status, body = get(f"http://127.0.0.1:{deployment.proxy_port}/{node}/health")
        assert status == 200, body
        assert set(json.loads(body)) == {"node", "status"}, body
        assert b"couchdb" not in body and PROJECT.encode() not in body

        status, body = get(f"http://127.0.0.1:{deployment.proxy_port}/{node}/metrics")
        assert status == 404 and json.loads(body)["error"] == "not_found", body
        assert b"kuno_" not in body

        # On the private network, from inside the node's container: every detail.
        inside = docker(
            "exec",
            f"{PROJECT}-standard-{node}",
            "python3",
            "-c",
            "import urllib.request as u; print(u.urlopen('http://127.0.0.1:4001/health').read().decode())",
        )
        health = json.loads(inside)
        assert health["links"]["expected"] == 4, health
        assert health["mesh"]["nodes"] == 3
