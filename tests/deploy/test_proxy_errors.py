"""The deployed proxy answers its own errors as the API's JSON, with raw requests.

Requests nginx refuses itself (a `%00` or a bad `%` escape in the path, a body over its
limit, an unknown path, a storage node that is down) get `{"error", "reason"}` JSON with
the status and `Content-Type: application/json`; the services' own errors pass through
untouched. Uses the session's deployment as the tests before left it (`proxied`).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from tests.deploy.conftest import PROJECT, Deployment, docker
from tests.support.pouchdb import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def raw(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send head (request line and headers, no final blank line) as is; (status, headers, body)."""
    request = head.replace("\n", "\r\n").rstrip("\r\n") + "\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request.encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    header_block, _, content = reply.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, content


def json_error(reply: tuple[int, dict[str, str], bytes], status: int, error: str) -> dict[str, Any]:
    got, headers, body = reply
    assert got == status, (got, body[:300])
    assert headers.get("content-type", "").split(";")[0] == "application/json", (
        headers,
        body[:300],
    )
    document = json.loads(body)
    assert document["error"] == error, document
    assert isinstance(document["reason"], str) and document["reason"], document
    return document


@pytest.mark.parametrize(
    "path",
    ["/api/%00", "/node1/messages/%zz", "/api/users/%0/key", "/ws%00", "/node2/health%"],
)
def test_a_path_the_proxy_cannot_decode_is_a_json_400(proxied: Deployment, path: str) -> None:
    reply = raw(proxied.proxy_port, f"GET {path} HTTP/1.1\nHost: localhost")
    json_error(reply, 400, "bad_request")


def test_a_body_over_the_proxys_limit_is_a_json_413(proxied: Deployment) -> None:
    # The default client_max_body_size is 1m: refused from the Content-Length, unread.
    for path in ("/api/register", "/node1/messages"):
        head = (
            f"POST {path} HTTP/1.1\nHost: localhost\nContent-Type: application/json\n"
            f"Content-Length: {2 * 1024 * 1024}"
        )
        json_error(raw(proxied.proxy_port, head), 413, "too_large")


def test_headers_or_an_uri_over_the_proxys_limits_are_json(proxied: Deployment) -> None:
    long_uri = "/api/users/" + "a" * 20000 + "/key"
    json_error(
        raw(proxied.proxy_port, f"GET {long_uri} HTTP/1.1\nHost: localhost"), 414, "uri_too_long"
    )
    head = f"GET /node1/health HTTP/1.1\nHost: localhost\nX-Big: {'b' * 20000}"
    json_error(raw(proxied.proxy_port, head), 400, "headers_too_large")


def test_a_path_no_service_serves_is_a_json_404(proxied: Deployment) -> None:
    for path in ("/node9/health", "/nothing/here.html", "/.kuno/errors/400"):
        reply = raw(proxied.proxy_port, f"GET {path} HTTP/1.1\nHost: localhost")
        json_error(reply, 404, "not_found")


def test_the_services_own_errors_pass_through_untouched(proxied: Deployment) -> None:
    # Without a token: each service's own 401, its own reason, not the proxy's.
    for path in ("/api/users/alice/key", "/node1/messages/alice"):
        reply = raw(proxied.proxy_port, f"GET {path} HTTP/1.1\nHost: localhost")
        document = json_error(reply, 401, "unauthorized")
        assert "proxy" not in document["reason"], document
    # An unknown route of the master: its 404, not the proxy's.
    reply = raw(proxied.proxy_port, "GET /api/no-such-route HTTP/1.1\nHost: localhost")
    assert "proxy" not in json_error(reply, 404, "not_found")["reason"]
    # And what works keeps working.
    status, health = proxied.proxy("/node1/health")
    assert status == 200, health
    assert health["node"] == "node1"


def test_a_stopped_storage_node_is_a_json_502(proxied: Deployment) -> None:
    standard = f"{PROJECT}-standard-node2"
    docker("stop", standard)
    try:
        time.sleep(6)  # nginx keeps a resolved address 5 s (resolver valid=5s)
        reply = raw(proxied.proxy_port, "GET /node2/health HTTP/1.1\nHost: localhost")
        json_error(reply, 502, "bad_gateway")
        # The other nodes still answer.
        assert proxied.proxy("/node1/health")[0] == 200
    finally:
        docker("start", standard)
    wait_until(lambda: proxied.proxy("/node2/health")[0] == 200, timeout=60, interval=1)
