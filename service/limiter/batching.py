"""Calls made in one event-loop turn, grouped by a key, sent as one at the turn's end.

The limiter's admissions and releases use it: the requests of one key that start, or end,
in the same turn share one Redis script call instead of one each (fewer round trips for the
process, and one write per counter in Redis for all of them). Nothing waits for a timer: a
batch closes when the loop runs the callback it scheduled, right after the turn that opened
it, or at `limit` items, and `send` is called then and there: what it does before its first
`await` (writing the command) is not put off to a task's first step, a turn later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class TurnBatcher(Generic[K, T]):
    """`add` items; each key's items of one turn go to `send` together, in order.

    Each caller's future resolves when its batch was sent, or raises what `send` raised.
    `send(key, items)` is called when the batch closes, and what it returns is awaited in a
    task of its own: a caller cancelled meanwhile does not stop its batch.
    """

    def __init__(self, send: Callable[[K, list[T]], Awaitable[None]], limit: int) -> None:
        self._send = send
        self._limit = limit
        self._open: dict[K, tuple[list[T], list[asyncio.Future[None]]]] = {}
        self._running: set[asyncio.Task[None]] = set()  # sends in flight (kept referenced)

    def add(self, key: K, item: T) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = ([], [])
            loop.call_soon(self._close, key)
        future = loop.create_future()
        batch[0].append(item)
        batch[1].append(future)
        if len(batch[0]) >= self._limit:
            self._close(key)
        return future

    def _close(self, key: K) -> None:
        batch = self._open.pop(key, None)
        if batch is None:  # already closed (at the limit, or by an earlier batch's callback)
            return
        items, futures = batch
        try:
            sending = self._send(key, items)
        except Exception as exc:
            self._settle(futures, exc)
            return
        task = asyncio.get_running_loop().create_task(self._run(sending, futures))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, sending: Awaitable[None], futures: list[asyncio.Future[None]]) -> None:
        try:
            await sending
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:
            self._settle(futures, exc)
            return
        self._settle(futures, None)

    @staticmethod
    def _settle(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
        """Every caller gets its batch's outcome (unless it stopped waiting)."""
        for future in futures:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
