"""Keep-alives for the streams a process relays: `: keep-alive` comments on silent ones.

Owned by the app lifespan (`StreamSet.start()` / `aclose()`); the relay opens and closes one
`_Stream` per response.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Send

KEEPALIVE = b": keep-alive\n\n"


class _Stream:
    __slots__ = ("closed", "last_send", "pinging", "send", "sending")

    def __init__(self, send: Send, now: float) -> None:
        self.send = send
        self.last_send = now
        self.closed = False
        self.sending = False  # the relay waits in send(): a client that reads slowly, or not
        self.pinging = False

    async def ping(self) -> None:
        if self.closed:
            return
        self.pinging = True
        try:
            with contextlib.suppress(Exception):
                await self.send(
                    {"type": "http.response.body", "body": KEEPALIVE, "more_body": True}
                )
        finally:
            self.pinging = False


class StreamSet:
    """The streams this process relays now; sends keep-alives on the idle ones.

    Owned by the app lifespan: `start()` in the running loop, `aclose()` on shutdown.
    """

    def __init__(self, keepalive_seconds: float) -> None:
        self.keepalive_seconds = keepalive_seconds
        self._streams: set[_Stream] = set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, send: Send, now: float) -> _Stream:
        """Track a stream that starts at `now` (its loop's time)."""
        stream = _Stream(send, now)
        self._streams.add(stream)
        return stream

    def close(self, stream: _Stream) -> None:
        stream.closed = True
        self._streams.discard(stream)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.keepalive_seconds
        pings: set[asyncio.Task[None]] = set()
        while True:
            await asyncio.sleep(min(1.0, interval / 3))
            now = loop.time()
            for stream in list(self._streams):
                # A stream whose client is not reading gets no pings piled up behind it.
                if stream.sending or stream.pinging or now - stream.last_send < interval:
                    continue
                stream.last_send = now
                task = loop.create_task(stream.ping())
                pings.add(task)
                task.add_done_callback(pings.discard)
