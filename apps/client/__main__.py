"""`kuno`: register, log in, send, read the inbox, listen.

    kuno --master https://example.org --node https://example.org/node1/ ... register alice
    kuno send bob "hello"
    kuno inbox
    kuno listen

The master and node URLs are remembered in the config directory after the first use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kuno.client.api import KunoClient, KunoError, OpenedMessage
from kuno.client.crypto import KeyPair
from kuno.client.profile import Profile, default_config_dir

if TYPE_CHECKING:
    from kuno.client.websocket import Ack


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kuno", description="kuno, end-to-end encrypted messages")
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="where keys and token live (default $KUNO_CONFIG_DIR or ~/.config/kuno)",
    )
    parser.add_argument("--master", help="the master's URL (default $KUNO_MASTER_URL)")
    parser.add_argument(
        "--node",
        action="append",
        dest="nodes",
        help="a storage node's URL, once per node (default $KUNO_NODE_URLS, comma-separated)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("register", "make a key pair and an account"), ("login", "log in")):
        command = commands.add_parser(name, help=text)
        command.add_argument("username", nargs="?" if name == "login" else None)
        command.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
    send = commands.add_parser("send", help="send one message")
    send.add_argument("user")
    send.add_argument("text")
    commands.add_parser("inbox", help="fetch, show and delete stored messages")
    commands.add_parser("listen", help="show messages as they arrive")
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> Profile:
    profile = Profile.load(args.config_dir or default_config_dir())
    master = args.master or os.environ.get("KUNO_MASTER_URL")
    nodes = args.nodes or [
        url.strip() for url in os.environ.get("KUNO_NODE_URLS", "").split(",") if url.strip()
    ]
    if master:
        profile.master_url = master
    if nodes:
        profile.node_urls = nodes
    if not profile.master_url:
        raise KunoError("the master's URL is unknown: pass --master or set KUNO_MASTER_URL")
    return profile


def read_password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise KunoError("the passwords differ")
    return password


def when(timestamp_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp_ms / 1000))


def show(message: OpenedMessage) -> None:
    if message.text is None:
        print(f"! {message.id} from {message.sender}: {message.error}", file=sys.stderr)
    else:
        print(f"[{when(message.timestamp)}] {message.sender}: {message.text}", flush=True)


def describe_ack(ack: Ack) -> str:
    delivered = "delivered" if ack.delivered else "recipient offline"
    if ack.storage == "disabled":
        kept = "" if ack.delivered else "; NOT stored (storage is disabled)"
        return f"sent {ack.id}: {delivered}{kept}"
    return f"sent {ack.id}: {delivered}, stored on {ack.stored}/{ack.nodes} nodes"


def logged_in(client: KunoClient, profile: Profile) -> None:
    token, keys = profile.load_token(), profile.load_key()
    if not profile.username or token is None:
        raise KunoError("not logged in: run `kuno login`")
    if keys is None:
        raise KunoError(f"no key pair in {profile.directory}: register on this machine first")
    client.use(profile.username, token, keys)


async def run(args: argparse.Namespace) -> int:
    profile = configure(args)
    async with KunoClient(profile.master_url or "", profile.node_urls) as client:
        if args.command == "register":
            existing = profile.load_key()
            if existing is not None and profile.username not in (None, args.username):
                raise KunoError(
                    f"{profile.directory} holds {profile.username}'s key: use another --config-dir"
                )
            password = read_password(args, confirm=not args.password_stdin)
            keys = existing or KeyPair.generate()
            profile.save_key(args.username, keys)  # before the account: never an account without it
            await client.register(args.username, password, keys)
            profile.save_token(await client.login(args.username, password))
            profile.username = client.username  # the user id: the name in lower case
            profile.save()
            print(f"registered {args.username}; keys in {profile.directory}")
        elif args.command == "login":
            username = args.username or profile.username
            if not username:
                raise KunoError("whom to log in as? `kuno login USERNAME`")
            password = read_password(args, confirm=False)
            profile.save_token(await client.login(username, password))
            profile.username = client.username
            profile.save()
            print(f"logged in as {username}")
        elif args.command == "send":
            logged_in(client, profile)
            async with client.connect() as socket:
                print(describe_ack(await socket.send(args.user, args.text)))
        elif args.command == "inbox":
            logged_in(client, profile)
            inbox = await client.fetch_inbox()
            for message in inbox.messages + inbox.undecryptable:
                show(message)
            deleted = await client.delete_everywhere(inbox.ids)
            for node, why in inbox.nodes_failed.items():
                print(f"! {node} did not answer ({why})", file=sys.stderr)
            incomplete = sum(1 for count in deleted.values() if count < len(client.node_urls))
            print(
                f"{len(inbox.messages)} messages, {len(inbox.undecryptable)} undecryptable removed"
                + (f", {incomplete} not yet deleted everywhere" if incomplete else ""),
                file=sys.stderr,
            )
        elif args.command == "listen":
            logged_in(client, profile)
            # A fresh token first: the socket's life starts from it, not from the login.
            profile.save_token(await client.refresh())
            async with client.connect() as socket:
                print(f"listening as {profile.username}; Ctrl-C to stop", file=sys.stderr)
                # The token is refreshed on the socket (and saved) before it expires.
                keeper = asyncio.create_task(socket.keep_fresh(on_token=profile.save_token))
                try:
                    async for message in socket.messages():
                        show(message)
                        await socket.received(message.id)
                finally:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keeper
                print(f"connection closed ({socket.close_code})", file=sys.stderr)
                return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        code = asyncio.run(run(args))
    except KeyboardInterrupt:
        code = 130
    except KunoError as exc:
        print(f"kuno: {exc}", file=sys.stderr)
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
