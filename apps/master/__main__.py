"""`kuno-master` / `python -m kuno.master`: run the master;
`kuno-master accounts ...`: the operators' account commands (kuno.master.accounts)."""

from __future__ import annotations

import sys
from typing import Any

from kuno.common.web import run_service
from kuno.master.app import create_app
from kuno.master.config import MasterSettings


def main() -> None:
    if sys.argv[1:2] == ["accounts"]:
        from kuno.master import accounts

        sys.exit(accounts.main(sys.argv[2:]))
    run_service(
        "kuno-master",
        MasterSettings,
        create_app,
        describe=_describe,
        # Sockets close after in-flight fan-outs, themselves bounded.
        shutdown_timeout=lambda settings: settings.shutdown_timeout + 5,
    )


def _describe(settings: MasterSettings) -> dict[str, Any]:
    return {
        "port": settings.port,
        "storage": "enabled" if settings.storage_enabled else "disabled",
        "standard_nodes": len(settings.standard_node_urls),
        "couchdb_servers": len(settings.couchdb_urls),
    }


if __name__ == "__main__":
    main()
