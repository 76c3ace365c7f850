"""`with Deadline(seconds):` — `asyncio.timeout` for the per-request hot path, at half its cost.

The standard one costs ~10 us a use here (an object, a task lookup, a timer, the state
machine on exit); a request used it twice on its way in, where the awaited thing is nearly
always ready already. This one is a plain (synchronous) context manager around one timer
handle: when it fires, the task is cancelled, and leaving the block turns that cancellation
into TimeoutError, as `asyncio.timeout` does (a cancellation from elsewhere stays one).
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """Cancel the task running the block after `seconds`; TimeoutError out of the block."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_seconds", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False

    def __enter__(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)  # given the loop, it looks for it no second time
        assert task is not None, "Deadline is used inside a task"
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = loop.call_later(self._seconds, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        # Only a cancellation this deadline made becomes TimeoutError.
        expired = self._expired and kind is asyncio.CancelledError
        if expired and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from error
