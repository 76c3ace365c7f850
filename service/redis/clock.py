"""Redis's clock as this process sees it: deadlines and timestamps in Redis's time.

The limiter's scripts read `TIME`, so every replica agrees on windows and days whatever its
own clock says. To tell Redis "don't run this after I have given up", a caller needs Redis's
time for its own give-up moment: its monotonic clock plus an offset. Every reply that
carries Redis's time bounds that offset: the script ran between the call's send and its
reply, so offset is in [redis - received, redis - sent]. The clock keeps the highest lower
bound seen (never ahead of Redis, so deadlines err early, never late; within one round trip
of the truth) and starts afresh from a sample that contradicts it (Redis's clock stepped
back, or drifted).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RedisClock:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.offset_ms: float | None = None  # Redis ms = local ms + offset

    def local_ms(self) -> float:
        """This process's monotonic clock, in milliseconds."""
        return self._monotonic() * 1000

    def observe(self, sent_ms: float, received_ms: float, redis_ms: int) -> None:
        """A reply sent at `sent_ms`, received at `received_ms` (local), said `redis_ms`."""
        low = redis_ms - received_ms
        high = redis_ms + 1 - sent_ms  # TIME truncated to the millisecond
        if self.offset_ms is None or low > self.offset_ms or self.offset_ms > high:
            self.offset_ms = low

    def deadline_ms(self, seconds: float) -> int:
        """Redis's time `seconds` from now; 0 (no deadline) before Redis's clock is known."""
        if self.offset_ms is None:
            return 0
        return int(self.local_ms() + seconds * 1000 + self.offset_ms)

    def redis_ms(self, local_ms: float) -> int:
        """Redis's time at a local instant (the wall clock until Redis's clock is known)."""
        if self.offset_ms is None:
            return int(time.time() * 1000 - (self.local_ms() - local_ms))
        return int(local_ms + self.offset_ms)
