"""NaturalBatcher: concurrent calls leave together, a lone call leaves at once."""

from __future__ import annotations

import asyncio

import pytest

from kuno.common.batching import NaturalBatcher


class Recorder:
    """A send that records its batches and waits for the test to let each one finish."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self._sent = asyncio.Condition()

    async def send(self, batch: list[int]) -> list[int]:
        async with self._sent:
            self.batches.append(batch)
            self._sent.notify_all()
        await self.release.wait()
        return [item * 10 for item in batch]

    async def sent(self, count: int) -> None:
        async with asyncio.timeout(2), self._sent:
            await self._sent.wait_for(lambda: len(self.batches) >= count)


async def first_batch_held() -> tuple[Recorder, NaturalBatcher[int, int], asyncio.Task[int]]:
    """One batch out at a time, and the first one, [1], out and held until released."""
    recorder = Recorder()
    recorder.release.clear()
    batcher = NaturalBatcher(recorder.send, max_items=10, in_flight=1)
    first = asyncio.create_task(batcher.submit(1))
    await recorder.sent(1)
    return recorder, batcher, first


async def test_a_lone_call_leaves_at_once_and_gets_its_own_result():
    recorder = Recorder()
    batcher = NaturalBatcher(recorder.send, max_items=10)
    assert await batcher.submit(3) == 30
    assert recorder.batches == [[3]]


async def test_calls_made_while_a_batch_is_out_leave_together_as_the_next():
    recorder, batcher, first = await first_batch_held()
    rest = [asyncio.create_task(batcher.submit(n)) for n in range(2, 7)]
    await asyncio.sleep(0.01)
    assert recorder.batches == [[1]]  # the others wait for the first write
    recorder.release.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 50, 60]
    assert recorder.batches == [[1], [2, 3, 4, 5, 6]]


async def test_batches_keep_to_max_items_and_in_flight():
    recorder = Recorder()
    recorder.release.clear()
    batcher = NaturalBatcher(recorder.send, max_items=3, in_flight=2)
    tasks = [asyncio.create_task(batcher.submit(n)) for n in range(8)]
    await recorder.sent(2)
    await asyncio.sleep(0.01)
    assert recorder.batches == [[0], [1]]  # two out at once, the rest queued
    recorder.release.set()
    assert await asyncio.gather(*tasks) == [n * 10 for n in range(8)]
    assert recorder.batches == [[0], [1], [2, 3, 4], [5, 6, 7]]


async def test_an_item_that_does_not_fit_starts_the_next_batch():
    recorder = Recorder()
    recorder.release.clear()
    batcher = NaturalBatcher(
        recorder.send, max_items=10, in_flight=1, fits=lambda batch, item: item not in batch
    )
    tasks = [asyncio.create_task(batcher.submit(n)) for n in (0, 1, 2, 1, 3)]
    await recorder.sent(1)
    recorder.release.set()
    assert await asyncio.gather(*tasks) == [0, 10, 20, 10, 30]
    assert recorder.batches == [[0], [1, 2], [1, 3]]


async def test_when_send_fails_every_caller_of_that_batch_gets_the_error_and_the_next_works():
    calls = 0

    async def send(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise ConnectionError("store down")
        return batch

    batcher = NaturalBatcher(send, max_items=10, in_flight=1)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    failing = [asyncio.create_task(batcher.submit(n)) for n in (1, 2)]
    results = await asyncio.gather(first, *failing, return_exceptions=True)
    assert results[0] == 0
    assert all(isinstance(result, ConnectionError) for result in results[1:])
    assert await batcher.submit(3) == 3


async def test_a_caller_that_gave_up_before_its_batch_left_is_left_out():
    recorder, batcher, first = await first_batch_held()
    gave_up = asyncio.create_task(batcher.submit(2))
    kept = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0)
    gave_up.cancel()
    recorder.release.set()
    assert await asyncio.gather(first, kept) == [10, 30]
    assert recorder.batches == [[1], [3]]


async def test_a_send_that_returns_the_wrong_number_of_results_fails_its_callers():
    async def send(batch: list[int]) -> list[int]:
        return []

    batcher = NaturalBatcher(send, max_items=10)
    with pytest.raises(RuntimeError, match="0 results for 1"):
        await batcher.submit(1)


def test_limits_below_one_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        NaturalBatcher(Recorder().send, max_items=0)
