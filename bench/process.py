"""The benchmarks' service processes and what they cost.

`Service` runs a kuno service (`python -m kuno.standard`, `python -m kuno.master`) as a
process of its own on 127.0.0.1, as production does: configured only by KUNO_ variables
(none inherited from this environment), started until its /health answers 200, stopped
within bounds. `CpuMeter` reads the CPU time groups of processes use (Linux /proc).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.pouchdb import free_port, http_json, wait_until


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """`python [python_args] -m module` with KUNO_HOST=127.0.0.1, a free KUNO_PORT,
    KUNO_LOG_LEVEL=warning and `settings` (KUNO_... names to strings); stderr dropped."""

    def __init__(
        self, module: str, settings: dict[str, str], python_args: list[str] | None = None
    ) -> None:
        self.module = module
        self.settings = settings
        self.python_args = python_args or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.module} not started"
        return self.process.pid

    def start(self, timeout: float = 30) -> Service:
        """Starts it and waits (at most `timeout` s) until GET /health answers 200."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUNO_")}
        env.update(KUNO_HOST="127.0.0.1", KUNO_PORT=str(self.port), KUNO_LOG_LEVEL="warning")
        env.update(self.settings)
        self.process = subprocess.Popen(
            [sys.executable, *self.python_args, "-m", self.module],
            env=env,
            stderr=subprocess.DEVNULL,
        )

        def healthy() -> bool:
            try:
                return http_json("GET", self.url + "/health", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(healthy, timeout=timeout, interval=0.1)
        return self

    def terminate(self) -> None:
        if self.process is not None:
            self.process.terminate()

    def wait(self, timeout: float = 15) -> None:
        """Waits for it to end after terminate(); kills it after `timeout` s."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 15) -> None:
        self.terminate()
        self.wait(timeout)


def stop_all(services: list[Service], timeout: float = 15) -> None:
    """Terminates them all at once, then waits for each (killed after `timeout` s)."""
    for service in services:
        service.terminate()
    for service in services:
        service.wait(timeout)


class CpuMeter:
    """CPU seconds used by named groups of processes since start()."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self._start = self._now()

    def per(self, count: int) -> dict[str, float]:
        """Each group's CPU seconds since start() divided by count (at least 1)."""
        return {
            name: (value - self._start[name]) / max(1, count) for name, value in self._now().items()
        }

    def per_message(self, messages: int) -> str:
        return "CPU ms per message: " + ", ".join(
            f"{name} {1000 * seconds:.2f}" for name, seconds in self.per(messages).items()
        )
