"""`kuno-master accounts`: what operators do with accounts the master will not serve.

    kuno-master accounts list                  # conflicted and not yet migrated accounts
    kuno-master accounts resolve NAME --keep REV
    kuno-master accounts migrate               # copy legacy accounts to their canonical id

It reads the master's own configuration (`KUNO_COUCHDB_URLS`, `KUNO_COUCHDB_USER`,
`KUNO_COUCHDB_PASSWORD`, `KUNO_USERS_DATABASE`, ...; the token key file must exist, as for
the service) and prints one JSON object on stdout. Exit status: 0 done, 1 some server
did not answer (run it again), 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp
from argon2 import PasswordHasher

from kuno.common import couch
from kuno.common.settings import ConfigError, exit_on_bad_config, load
from kuno.master.config import MasterSettings
from kuno.master.users import Failover, NoMajority, UserDirectory

PROGRAM = "kuno-master accounts"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="accounts in conflict (served to nobody) and legacy ids")
    resolve = commands.add_parser(
        "resolve", help="keep one revision of a conflicted account, delete the others everywhere"
    )
    resolve.add_argument("name", help="the account's document id, as `list` shows it")
    resolve.add_argument("--keep", required=True, metavar="REV", help="the revision to keep")
    commands.add_parser("migrate", help="copy accounts made before canonical names")
    args = parser.parse_args(argv)
    try:
        settings = load(MasterSettings)
    except ConfigError as exc:
        exit_on_bad_config(PROGRAM, exc)
    try:
        result, complete = asyncio.run(_run(settings, args))
    except ValueError as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0 if complete else 1


async def _run(settings: MasterSettings, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    async with aiohttp.ClientSession() as session:
        # Nothing is hashed here but the directory's dummy: keep it cheap.
        directory = UserDirectory(
            Failover.of(session, settings),
            settings.users_database,
            PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
        )
        if args.command == "list":
            survey = await directory.survey()
            return survey, not survey["unreachable"]
        if args.command == "resolve":
            outcome = await directory.resolve(args.name, args.keep)
            return outcome, not outcome["unreachable"]
        return await _migrate(directory)


async def _migrate(directory: UserDirectory) -> tuple[dict[str, Any], bool]:
    survey = await directory.survey()
    outcomes: dict[str, list[str]] = {"migrated": [], "canonical": [], "collision": []}
    failed: list[str] = []
    for doc_id in survey["legacy"]:
        user = await directory.read_document(doc_id)
        if user is None:
            continue
        try:
            outcomes[await directory.migrate(user)].append(doc_id)
        except (couch.CouchError, NoMajority):
            failed.append(doc_id)
    outcomes["collision"] = sorted({*outcomes["collision"], *survey["collisions"]})
    result = {**outcomes, "failed": failed, "unreachable": survey["unreachable"]}
    return result, not failed and not survey["unreachable"]
