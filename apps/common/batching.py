"""Natural batching: concurrent calls leave together as one batch.

While `in_flight` batches are out, new items queue; when one comes back, everything
queued meanwhile (up to the limits) leaves as the next batch. A lone call goes out at
once, so nothing waits at low load, and batches grow by themselves under load. Written
here rather than taken from a library: the few asyncio batching packages on PyPI add
a fixed delay to gather items, which is the latency this avoids.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Queued(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]


class NaturalBatcher(Generic[Item, Result]):
    """`await submit(item)` → that item's result from `send(batch)`.

    `send` returns one result per item, in order; when it raises, every caller of that
    batch gets the exception. `fits(batch, item)` may refuse an item for the batch being
    formed (it then starts the next one). A caller that stops waiting (cancelled) before
    its batch left is left out of it.
    """

    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_items: int,
        in_flight: int = 1,
        fits: Callable[[list[Item], Item], bool] | None = None,
    ) -> None:
        if max_items < 1 or in_flight < 1:
            raise ValueError("max_items and in_flight must be at least 1")
        self._send = send
        self._max_items = max_items
        self._in_flight = in_flight
        self._fits = fits
        self._queue: deque[_Queued[Item, Result]] = deque()
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        queued = _Queued[Item, Result](item, asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        self._pump()
        return await queued.future

    async def close(self) -> None:
        """Cancel the batches still out (their callers get CancelledError)."""
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    def _pump(self) -> None:
        while self._queue and len(self._sending) < self._in_flight:
            batch = self._take()
            if not batch:
                return
            task = asyncio.create_task(self._deliver(batch))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._pump()

    def _take(self) -> list[_Queued[Item, Result]]:
        batch: list[_Queued[Item, Result]] = []
        items: list[Item] = []
        while self._queue and len(batch) < self._max_items:
            queued = self._queue[0]
            if queued.future.done():  # its caller gave up before it left
                self._queue.popleft()
                continue
            if batch and self._fits is not None and not self._fits(items, queued.item):
                break
            batch.append(self._queue.popleft())
            items.append(queued.item)
        return batch

    async def _deliver(self, batch: list[_Queued[Item, Result]]) -> None:
        try:
            results = await self._send([queued.item for queued in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"send returned {len(results)} results for {len(batch)}")
        except asyncio.CancelledError:
            for queued in batch:
                queued.future.cancel()
            raise
        except Exception as exc:
            for queued in batch:
                if not queued.future.done():
                    queued.future.set_exception(exc)
            return
        for queued, result in zip(batch, results, strict=True):
            if not queued.future.done():
                queued.future.set_result(result)
