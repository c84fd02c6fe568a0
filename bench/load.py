"""A bounded closed-loop load generator and latency statistics."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    label: str
    concurrency: int
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        """Latency at percentile p (0..100), in milliseconds."""
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0] * 1000
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(p) - 1] * 1000

    def line(self) -> str:
        return (
            f"{self.label:<34} c={self.concurrency:<3} n={len(self.latencies):<7} "
            f"{self.rate:9.1f}/s  p50 {self.percentile(50):7.2f} ms  "
            f"p99 {self.percentile(99):7.2f} ms  errors {self.errors}"
        )


async def closed_loop(
    label: str,
    request: Callable[[int], Awaitable[bool]],
    concurrency: int,
    duration: float,
    max_requests: int,
) -> LoadResult:
    """`concurrency` workers call request(i) back to back until `duration` seconds or
    `max_requests` calls have passed; request returns False for an error."""
    result = LoadResult(label, concurrency)
    counter = iter(range(max_requests))
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() >= deadline:
                return
            started = time.perf_counter()
            ok = await request(i)
            if ok:
                result.latencies.append(time.perf_counter() - started)
            else:
                result.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result
