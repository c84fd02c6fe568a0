"""`kuno-standard` / `python -m kuno.standard`: run one standard node."""

from __future__ import annotations

import logging

from aiohttp import web

from kuno.common.logs import configure_logging
from kuno.common.settings import ConfigError, exit_on_bad_config, load
from kuno.standard.app import create_app
from kuno.standard.config import StandardSettings

PROGRAM = "kuno-standard"


def main() -> None:
    try:
        settings = load(StandardSettings)
    except ConfigError as exc:
        exit_on_bad_config(PROGRAM, exc)
    configure_logging(settings.log_level)
    logging.getLogger(PROGRAM).info(
        "starting", extra={"node": settings.node_name, "port": settings.port}
    )
    # access_log=None: the error middleware logs each request, without query strings.
    web.run_app(
        create_app(settings), host=settings.host, port=settings.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
