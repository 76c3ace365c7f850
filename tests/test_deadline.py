"""`Deadline` (the hot path's asyncio.timeout) and the garbage-collector settings."""

from __future__ import annotations

import asyncio
import gc

import pytest

from service.server.deadline import Deadline
from service.server.runtime import GEN0_THRESHOLD, settle_after_startup


async def test_a_block_past_its_deadline_raises_timeout_error():
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError), Deadline(0.05):
        await asyncio.sleep(5)
    assert asyncio.get_running_loop().time() - started < 1
    assert asyncio.current_task().cancelling() == 0  # the cancellation was taken back


async def test_a_block_within_its_deadline_is_not_cancelled_later():
    with Deadline(0.05):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # past the deadline: its timer was cancelled with the block
    assert asyncio.current_task().cancelling() == 0


async def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    async def waits() -> None:
        with Deadline(5):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(waits())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_collector_is_settled_after_startup():
    threshold = gc.get_threshold()
    try:
        settle_after_startup()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
