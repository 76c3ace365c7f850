"""A client's disconnect, seen on `receive`, cancels what its request is waiting on.

The SSE relay (`sse/relay.py`) and non-streaming upstream calls (`routes/upstream_calls.py`) run
in `cancelled_on_disconnect`: a client that leaves closes the upstream request (within 50 ms).
Without it an abandoned image generation or long completion, which sends nothing until the
upstream has answered, would run to its end upstream and be paid for.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive


class ClientDisconnected(Exception):
    """The client closed the connection before a response was sent."""


WATCH_AFTER_SECONDS = 0.05


def cancelled_on_disconnect(
    receive: Receive, after: float = WATCH_AFTER_SECONDS
) -> DisconnectWatch:
    """`async with` it: run the block; if the client disconnects meanwhile, cancel the block and
    raise ClientDisconnected.

    Use it only before anything is sent: once a response is complete, `receive` reports a
    disconnect as well. The watch starts `after` seconds in: a task per request is its costliest
    part, and most streams in a burst are over before then (a disconnect in the first `after`
    seconds is seen when the watch starts).
    """
    return DisconnectWatch(receive, after)


class DisconnectWatch:
    """The async context manager behind `cancelled_on_disconnect`."""

    __slots__ = ("_after", "_gone", "_receive", "_start", "_task", "_watcher")

    def __init__(self, receive: Receive, after: float) -> None:
        self._receive = receive
        self._after = after
        self._gone = False
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        self._task = task
        self._start = loop.call_later(self._after, self._watch)

    def _watch(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._wait())

    async def _wait(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone = True
        self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        task = self._task
        self._start.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        # The watcher's frame holds this watch, and this watch its watcher, its timer (whose
        # callback is this watch's method) and the request's task: kept, they make a cycle
        # that holds the request's whole context until the cyclic collector runs.
        self._watcher = self._start = self._task = None  # type: ignore[assignment]
        if kind is asyncio.CancelledError and self._gone:
            task.uncancel()
            raise ClientDisconnected from None
