"""Polling for an observable result instead of sleeping a fixed time, in async tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float) -> bool:
    """Call `check` (plain or async) until it holds; False if it still fails after `within`
    seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
