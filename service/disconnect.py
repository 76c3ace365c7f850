"""A client's disconnect, seen on `receive`, cancels what its request is waiting on.

The SSE relay (`sse.py`) and non-streaming upstream calls (`routes/completion.py`) run in
`cancelled_on_disconnect`: a client that leaves closes the upstream request at once. Without
it an abandoned image generation or long completion, which sends nothing until the upstream
has answered, would run to its end upstream and be paid for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.types import Receive


class ClientDisconnected(Exception):
    """The client closed the connection before a response was sent."""


@contextlib.asynccontextmanager
async def cancelled_on_disconnect(receive: Receive) -> AsyncIterator[None]:
    """Run the block; if the client disconnects meanwhile, cancel it and raise ClientDisconnected.

    Use it only before anything is sent: once a response is complete, `receive` reports a
    disconnect as well.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        raise ClientDisconnected from None
    finally:
        watcher.cancel()
