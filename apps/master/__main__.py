"""`kuno-master` / `python -m kuno.master`: run the master."""

from __future__ import annotations

import logging

from aiohttp import web

from kuno.common.logs import configure_logging
from kuno.common.settings import ConfigError, exit_on_bad_config, load
from kuno.master.app import create_app
from kuno.master.config import MasterSettings

PROGRAM = "kuno-master"


def main() -> None:
    try:
        settings = load(MasterSettings)
    except ConfigError as exc:
        exit_on_bad_config(PROGRAM, exc)
    configure_logging(settings.log_level)
    logging.getLogger(PROGRAM).info(
        "starting",
        extra={
            "port": settings.port,
            "storage": "enabled" if settings.storage_enabled else "disabled",
            "standard_nodes": len(settings.standard_node_urls),
            "couchdb_servers": len(settings.couchdb_urls),
        },
    )
    # access_log=None: the error middleware logs each request, without query strings.
    # shutdown_timeout: sockets close after in-flight fan-outs, themselves bounded.
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=settings.shutdown_timeout + 5,
    )


if __name__ == "__main__":
    main()
