"""What the `kuno` command imports before it knows its subcommand: the inbox and the
account commands need neither the WebSocket's frame protocol (pydantic), nor JWT, nor the
servers' side of kuno (aiohttp.web, prometheus_client)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY_FOR_THE_INBOX = (
    "pydantic",
    "jwt",
    "aiohttp.web",
    "prometheus_client",
    "kuno.common.protocol",
    "kuno.common.web",
    "kuno.client.websocket",
)


def imported_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(run.stdout))


def test_the_command_imports_no_socket_protocol_jwt_or_server_code() -> None:
    modules = imported_by("import kuno.client.__main__")
    assert not [name for name in HEAVY_FOR_THE_INBOX if name in modules]


def test_the_socket_names_still_import_from_the_client_api() -> None:
    modules = imported_by("from kuno.client.api import Ack, Outgoing, Socket")
    assert "kuno.client.websocket" in modules
    assert "kuno.common.protocol" in modules
