"""The disconnect watch (`service/server/disconnect.py`) on its own: what it cancels, and what it
leaves behind."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from service.server.disconnect import ClientDisconnected, cancelled_on_disconnect


class _Client:
    """An ASGI `receive` that reports a disconnect once `leave()` is called (never before)."""

    def __init__(self) -> None:
        self._gone = asyncio.Event()

    async def __call__(self) -> dict:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    def leave(self) -> None:
        self._gone.set()


async def test_a_disconnect_cancels_the_block_and_raises_client_disconnected():
    client = _Client()
    asyncio.get_running_loop().call_later(0.05, client.leave)
    with pytest.raises(ClientDisconnected):
        async with cancelled_on_disconnect(client, after=0):
            await asyncio.sleep(5)
    assert asyncio.current_task().cancelling() == 0  # the cancellation was taken back


async def test_a_block_that_ends_first_is_not_cancelled():
    client = _Client()
    async with cancelled_on_disconnect(client, after=0):
        await asyncio.sleep(0.02)  # the watch has started and waits on receive()
    client.leave()
    await asyncio.sleep(0.02)  # the watcher is gone: nothing cancels this task now
    assert asyncio.current_task().cancelling() == 0


@pytest.mark.parametrize("after", [0, 5])
async def test_a_watch_leaves_no_reference_cycle(after: float):
    """Once the block ends, the watch, its watcher task and what they hold (the request's
    `receive`, and through it its whole context) are freed by reference counting. A cycle
    among them kept ~32 objects of each stream until the cyclic collector ran: at 400
    realistic streams, ~18 MB more memory and ~70 us a stream in the collector."""
    client = _Client()
    alive = weakref.ref(client)
    gc.collect()
    gc.disable()
    try:
        async with cancelled_on_disconnect(client, after=after):
            await asyncio.sleep(0.02)  # with after=0 the watch has started
        del client
        for _ in range(3):
            await asyncio.sleep(0)  # the watcher's cancellation runs to its end
        assert alive() is None
    finally:
        gc.enable()
