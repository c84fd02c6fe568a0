"""10,000 authenticated WebSockets through the deployed proxy: memory, connect rate, and
send → ack at a steady rate with them open vs without.

    .venv/bin/python -m bench.sockets [--project kuno] [--url http://127.0.0.1:8080]
        [--direct] [--sockets 10000] [--processes 4] [--rate 50] [--duration 20] [--idle 35]
        [--recipients 20]

Against the deployment `make deploy` made (project `kuno`): every connection goes to the
proxy, at `--url` or, with `--direct`, at the proxy container's own address on its public
Docker network (past Docker's userland proxy, itself a process with an open-files limit).
The sockets' tokens are signed here with the master's key (`/opt/<project>/secrets`), one
user per socket, so opening them costs what it costs a client: the TCP and WebSocket
handshakes through nginx and the master's token check; no account is made per socket.

1. steady, without: `--rate` messages/s for `--duration` s over 8 sockets to `--recipients`
   offline recipients in turn (accounts registered once), send → ack latency; master and
   proxy memory (`docker stats --no-stream`);
2. connect: `--sockets` sockets opened by `--processes` processes (each raises its own
   open-files limit), 32 handshakes in flight per process; the rate is sockets opened per
   second from the first handshake to the last `ready`; any refusal is printed with its
   status and body;
3. idle: `--idle` s with every socket open (the master's heartbeat is 30 s), then master
   and proxy memory;
4. steady, with them open: as 1.; then the p99 ratio with/without;
5. every socket is closed; those the server closed early are counted.
Targets (issue 14): master + proxy memory at 10,000 idle sockets <= 400 MB; connect rate
>= 500/s; p99 with / without <= 1.2. Every phase is bounded in count and time; the
processes close their sockets and exit after HOLD_LIMIT seconds whatever happens. Not a
test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import re
import resource
import secrets
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import LoadResult
from bench.master_throughput import STEADY_SOCKETS, Acks, load, open_loop
from kuno.client.crypto import KeyPair
from kuno.common.tokens import TokenSigner, load_private_key

MAX_SOCKETS = 20_000
MAX_RATE = 200.0
MAX_DURATION = 120.0
HANDSHAKES_IN_FLIGHT = 32  # per process
CONNECT_TIMEOUT = 30.0  # seconds for one handshake and its `ready`
HOLD_LIMIT = 900.0  # seconds a socket process lives at most
PASSWORD = "bench sockets password"
TOKEN_TTL = 3600.0


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


def memory_mib(containers: list[str]) -> dict[str, float]:
    """Each container's memory as `docker stats --no-stream` reports it, in MiB."""
    units = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}
    usage = {}
    for line in docker(
        "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *containers
    ).splitlines():
        name, used = line.split()[:2]
        number = used.rstrip("BKMGi")
        usage[name] = float(number) * units[used[len(number) :]]
    return usage


def raise_open_files() -> int:
    """This process's soft open-files limit raised to its hard limit; returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass
class Opened:
    """What one socket process reports: when its handshakes began and ended, how many
    opened, and every refusal (status and body, or the error)."""

    started: float = 0.0
    finished: float = 0.0
    opened: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    closed_early: int = 0


class RawSocket:
    """A minimal WebSocket client over asyncio streams (RFC 6455): the upgrade with the
    token, the server's first frame, then only what keeps an idle socket open (a pong for
    each ping). aiohttp's client costs several times the CPU per handshake, which on 2
    shared cores would measure the load generator rather than the proxy and the master."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, token: str) -> tuple[RawSocket | None, str]:
        """(the socket, its first frame) once upgraded; (None, "HTTP status body") when
        refused."""
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = head.split(" ", 2)[1]
        if status != "101":
            length = re.search(r"(?im)^content-length:\s*(\d+)", head)
            body = await reader.readexactly(int(length[1])) if length else b""
            writer.close()
            return None, f"HTTP {status} {body.decode(errors='replace').strip()}"
        socket = cls(reader, writer)
        _, first = await socket.frame()
        return socket, first.decode()

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server (unmasked): (opcode, payload)."""
        head = await self.reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return head[0] & 0x0F, await self.reader.readexactly(length)

    def send(self, opcode: int, payload: bytes) -> None:
        """A masked frame (clients must mask), payload under 126 bytes."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    async def idle(self) -> None:
        """Answer pings until the server closes the socket."""
        try:
            while True:
                opcode, payload = await self.frame()
                if opcode == 0x9:
                    self.send(0xA, payload)
                elif opcode == 0x8:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.closed = True
        self.writer.close()

    async def close(self) -> None:
        if not self.closed:
            self.send(0x8, (1000).to_bytes(2, "big"))
            self.closed = True
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()
            self.writer.close()


def is_ready(frame: str) -> bool:
    try:
        return bool(json.loads(frame).get("type") == "ready")
    except (ValueError, AttributeError):
        return False


async def hold_sockets(
    url: str, tokens: list[str], report: Any, release: Any, hold_limit: float
) -> None:
    opened = Opened(started=time.time())
    sockets: list[RawSocket] = []
    readers: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
    address = urllib.parse.urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80

    def count(kind: str) -> None:
        opened.refused[kind] = opened.refused.get(kind, 0) + 1

    async def connect(token: str) -> None:
        async with gate:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    socket, first = await RawSocket.open(host, port, token)
            except Exception as exc:  # every failure is counted, by kind
                count(type(exc).__name__)
                return
            if socket is None:
                count(first)
                return
            if not is_ready(first):
                count(f"first frame {first}")
                await socket.close()
                return
            sockets.append(socket)
            readers.append(asyncio.create_task(socket.idle()))

    await asyncio.gather(*(connect(token) for token in tokens))
    opened.finished = time.time()
    opened.opened = len(sockets)
    report.send(opened)
    # Hold until the parent says so, or HOLD_LIMIT at most.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, release.wait, hold_limit)
    opened.closed_early = sum(1 for socket in sockets if socket.closed)
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    report.send(opened)


def socket_process(url: str, tokens: list[str], report: Any, release: Any) -> None:
    raise_open_files()
    asyncio.run(hold_sockets(url, tokens, report, release, HOLD_LIMIT))


def proxy_url(project: str, direct: bool, url: str) -> str:
    if not direct:
        return url
    network = f"{project}-public"
    address = docker(
        "inspect",
        "-f",
        f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
        f"{project}-proxy",
    )
    return f"http://{address}:80"


async def register(session: aiohttp.ClientSession, url: str, username: str) -> None:
    body = {"username": username, "password": PASSWORD, "publicKey": KeyPair.generate().public_b64}
    async with session.post(f"{url}/api/register", json=body) as response:
        if response.status != 201:
            raise SystemExit(f"register {username}: {response.status} {await response.text()}")


async def steady(
    url: str,
    signer: TokenSigner,
    recipients: list[str],
    rate: float,
    duration: float,
    label: str,
) -> LoadResult:
    """`rate` sends/s for `duration` s over STEADY_SOCKETS sockets of one sender, to the
    recipients in turn."""
    async with aiohttp.ClientSession() as session:
        sender = f"bench-sender-{secrets.token_hex(4)}"
        headers = {"Authorization": f"Bearer {signer.sign(sender)}"}
        sockets = []
        for _ in range(STEADY_SOCKETS):
            ws = await session.ws_connect(f"{url}/ws", headers=headers)
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
            sockets.append(ws)
        acks = Acks(sockets)
        try:
            return await open_loop(
                label, lambda n: acks.send(n, recipients[n % len(recipients)]), rate, duration
            )
        finally:
            await acks.close()
            for ws in sockets:
                await ws.close()


def memory_line(containers: list[str]) -> tuple[str, float]:
    usage = memory_mib(containers)
    total = sum(usage.values())
    parts = ", ".join(f"{name} {value:.1f} MiB" for name, value in usage.items())
    return f"{parts}; together {total:.1f} MiB ({total * 1.048576:.1f} MB)", total * 1.048576


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="kuno")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="connect to the proxy container's address, past Docker's userland proxy",
    )
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument(
        "--recipients",
        type=int,
        default=20,
        help="offline recipients the steady sends go to in turn (1: one ever longer queue)",
    )
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--idle", type=float, default=35.0)
    args = parser.parse_args()
    if not 1 <= args.sockets <= MAX_SOCKETS:
        parser.error(f"--sockets: 1 to {MAX_SOCKETS}")
    if not 0 < args.rate <= MAX_RATE or not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--rate at most {MAX_RATE}/s, --duration at most {MAX_DURATION} s")
    if not 0 <= args.idle <= 300 or not 1 <= args.processes <= 16:
        parser.error("--idle 0 to 300 s, --processes 1 to 16")
    if not 1 <= args.recipients <= 200:
        parser.error("--recipients 1 to 200")

    key = Path(f"/opt/{args.project}/secrets/token-private.pem").read_bytes()
    asyncio.run(run(args, TokenSigner(load_private_key(key), "kuno", TOKEN_TTL)))


async def run(args: argparse.Namespace, signer: TokenSigner) -> None:
    print(f"# start: {uptime()}", flush=True)
    url = proxy_url(args.project, args.direct, args.url)
    containers = [f"{args.project}-master", f"{args.project}-proxy"]
    recipients = [f"bench-recipient-{secrets.token_hex(4)}" for _ in range(args.recipients)]
    async with aiohttp.ClientSession() as session:
        for recipient in recipients:
            await register(session, url, recipient)
    print(f"# through {url}; {args.sockets} sockets in {args.processes} processes", flush=True)

    line, _ = memory_line(containers)
    print(f"memory, no socket open: {line}", flush=True)
    # A short run first: the first sends after a deploy meet cold caches and connections.
    print((await steady(url, signer, recipients, args.rate, 5.0, "steady, warm-up")).line())
    without = await steady(url, signer, recipients, args.rate, args.duration, "steady, without")
    print(without.line(), flush=True)

    run = secrets.token_hex(3)
    tokens = [signer.sign(f"bench-{run}-{i}") for i in range(args.sockets)]
    context = multiprocessing.get_context("spawn")
    release = context.Event()
    pipes, processes = [], []
    for n in range(args.processes):
        receiver, sender = context.Pipe(duplex=False)
        share = tokens[n :: args.processes]
        process = context.Process(target=socket_process, args=(url, share, sender, release))
        process.start()
        pipes.append(receiver)
        processes.append(process)
    try:
        loop = asyncio.get_running_loop()
        opened: list[Opened] = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
        started = min(o.started for o in opened)
        finished = max(o.finished for o in opened)
        count = sum(o.opened for o in opened)
        refused: dict[str, int] = {}
        for o in opened:
            for reason, n in o.refused.items():
                refused[reason] = refused.get(reason, 0) + n
        print(
            f"connect: {count} of {args.sockets} opened in {finished - started:.1f} s: "
            f"{count / (finished - started):.0f}/s; not opened: {refused or 0}",
            flush=True,
        )
        print(f"# idle {args.idle:.0f} s; {load()}", flush=True)
        await asyncio.sleep(args.idle)
        line, idle_mb = memory_line(containers)
        print(f"memory, {count} idle sockets: {line}", flush=True)
        with_open = await steady(
            url, signer, recipients, args.rate, args.duration, f"steady, {count} open"
        )
        print(with_open.line(), flush=True)
    finally:
        release.set()
        closed = [pipe.recv() if pipe.poll(120) else None for pipe in pipes]
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    early = sum(o.closed_early for o in closed if o is not None)
    ratio = with_open.percentile(99) / without.percentile(99)
    print(f"closed by the server while held: {early}")
    print(
        f"targets: memory {idle_mb:.0f} MB (<= 400); connect {count / (finished - started):.0f}/s "
        f"(>= 500); p99 {with_open.percentile(99):.1f} / {without.percentile(99):.1f} ms = "
        f"{ratio:.2f} (<= 1.2)"
    )
    print(f"# end: {uptime()}; {os.getloadavg()}")


if __name__ == "__main__":
    main()
