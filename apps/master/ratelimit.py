"""Token buckets: a burst, then a steady rate."""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    def __init__(self, burst: int, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now

    def take(self) -> bool:
        """Spend one token; False (nothing spent) when the bucket is empty."""
        self._refill(time.monotonic())
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def retry_after(self) -> float:
        """Seconds until the next token."""
        self._refill(time.monotonic())
        return max(0.0, (1 - self._tokens) / self.per_second)


class KeyedLimiter:
    """One bucket per key (a username, a client address), the oldest forgotten past max_keys."""

    def __init__(self, burst: int, per_second: float, max_keys: int = 100_000) -> None:
        self.burst = burst
        self.per_second = per_second
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when allowed, else the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.burst, self.per_second)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        if bucket.take():
            return 0.0
        return bucket.retry_after()
