"""The `kuno` command, run as a real process against the cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

from tests.e2e.cluster import Cluster, unique
from tests.e2e.conftest import PASSWORD
from tests.support.pouchdb import eventually


class Kuno:
    """One user's `kuno` with a config directory of its own."""

    def __init__(self, cluster: Cluster, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.env = {**os.environ, "KUNO_CONFIG_DIR": str(config_dir)}
        self.base = [sys.executable, "-m", "kuno.client", "--master", cluster.master.url]
        for url in cluster.node_urls:
            self.base += ["--node", url]

    async def run(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *self.base,
            *args,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=30)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def listen(self) -> asyncio.subprocess.Process:
        """A running `kuno listen`, past its "listening as" line on stderr."""
        listener = await asyncio.create_subprocess_exec(
            *self.base,
            "listen",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Ctrl-C must reach it even when the suite runs as a background job, whose
            # shell starts every child with SIGINT ignored.
            preexec_fn=_sigint_as_from_a_terminal,
        )
        try:
            assert listener.stderr is not None and listener.stdout is not None
            line = await asyncio.wait_for(listener.stderr.readline(), timeout=15)
            assert b"listening as" in line
        except BaseException:
            listener.kill()  # no leftover for a later test
            await listener.communicate()
            raise
        return listener


async def test_register_send_inbox_and_login_from_the_command_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice, bob = Kuno(cluster, tmp_path / "alice"), Kuno(cluster, tmp_path / "bob")
    code, out, err = await alice.run("register", alice_name, "--password-stdin", stdin=PASSWORD)
    assert (code, err) == (0, "")
    assert f"registered {alice_name}" in out
    assert (await bob.run("register", bob_name, "--password-stdin", stdin=PASSWORD))[0] == 0
    key_file = tmp_path / "alice" / "key.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    code, out, _ = await alice.run("send", bob_name, "hello from the command line")
    assert code == 0
    assert out.startswith("sent ") and "stored on 3/3 nodes" in out

    code, out, err = await bob.run("inbox")
    assert code == 0
    assert f"{alice_name}: hello from the command line" in out
    assert "1 messages, 0 undecryptable removed" in err
    code, out, _ = await bob.run("inbox")
    assert (code, out) == (0, "")

    code, _, err = await bob.run("login", bob_name, "--password-stdin", stdin="wrong password")
    assert code == 1
    assert "invalid_credentials" in err
    code, out, _ = await bob.run("login", "--password-stdin", stdin=PASSWORD)
    assert (code, out.strip()) == (0, f"logged in as {bob_name}")

    code, _, err = await alice.run("send", unique("nobody"), "into the void")
    assert code == 1
    assert "kuno:" in err


async def test_listen_prints_messages_as_they_arrive_and_marks_them_received(
    cluster: Cluster, tmp_path: Path
) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice, bob = Kuno(cluster, tmp_path / "alice"), Kuno(cluster, tmp_path / "bob")
    await alice.run("register", alice_name, "--password-stdin", stdin=PASSWORD)
    await bob.run("register", bob_name, "--password-stdin", stdin=PASSWORD)
    listener = await bob.listen()
    try:
        assert listener.stdout is not None
        code, out, _ = await alice.run("send", bob_name, "are you there?")
        assert code == 0 and "delivered, stored on 3/3" in out
        message_id = out.split()[1].rstrip(":")
        shown = await asyncio.wait_for(listener.stdout.readline(), timeout=15)
        assert f"{alice_name}: are you there?" in shown.decode()
        # `received` went back to the master, which deleted it from every node.
        await eventually(lambda: cluster.stored_on(message_id) == [False] * 3, within=10)
    finally:
        listener.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(listener.wait(), timeout=10)
        except TimeoutError:
            listener.kill()  # fail here, not later in another test with its leftovers
            await listener.communicate()
    assert listener.returncode == 130


def _sigint_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
