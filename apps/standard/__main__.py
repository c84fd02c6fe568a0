"""`kuno-standard` / `python -m kuno.standard`: run one standard node."""

from __future__ import annotations

from kuno.common.web import run_service
from kuno.standard.app import create_app
from kuno.standard.config import StandardSettings


def main() -> None:
    run_service(
        "kuno-standard",
        StandardSettings,
        create_app,
        describe=lambda settings: {"node": settings.node_name, "port": settings.port},
    )


if __name__ == "__main__":
    main()
