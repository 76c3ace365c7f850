"""Items added in one loop turn go out together, per key; every caller learns its batch's fate."""

from __future__ import annotations

import asyncio

from service.limiter.batching import TurnBatcher


class Recorder:
    def __init__(self, fail: Exception | None = None, pause: float = 0) -> None:
        self.sent: list[tuple[str, list[int]]] = []
        self.fail = fail
        self.pause = pause

    async def __call__(self, key: str, items: list[int]) -> None:
        await asyncio.sleep(self.pause)
        self.sent.append((key, items))
        if self.fail is not None:
            raise self.fail


async def test_items_of_one_turn_go_together_by_key_and_later_ones_apart():
    send = Recorder()
    batcher = TurnBatcher(send, limit=10)
    first = [batcher.add("a", 1), batcher.add("b", 2), batcher.add("a", 3)]
    await asyncio.gather(*first)
    await batcher.add("a", 4)
    assert send.sent == [("a", [1, 3]), ("b", [2]), ("a", [4])]


async def test_a_full_batch_goes_at_once_and_the_rest_of_the_turn_follows():
    send = Recorder()
    batcher = TurnBatcher(send, limit=2)
    await asyncio.gather(*(batcher.add("a", i) for i in range(5)))
    assert send.sent == [("a", [0, 1]), ("a", [2, 3]), ("a", [4])]


async def test_every_caller_of_a_failed_batch_gets_its_error():
    batcher = TurnBatcher(Recorder(fail=ConnectionError("gone")), limit=10)
    results = await asyncio.gather(batcher.add("a", 1), batcher.add("a", 2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]


async def test_a_caller_cancelled_while_waiting_does_not_stop_its_batch():
    send = Recorder(pause=0.05)
    batcher = TurnBatcher(send, limit=10)

    async def caller(item: int) -> None:
        await batcher.add("a", item)

    leaving = asyncio.create_task(caller(1))
    staying = asyncio.create_task(caller(2))
    await asyncio.sleep(0.01)
    leaving.cancel()
    await staying
    assert send.sent == [("a", [1, 2])]


async def test_send_starts_when_the_batch_closes_not_a_turn_later():
    """What `send` does before its first await (writing the command) runs in the callback that
    closes the batch, not in a task's first step a turn later."""
    started: list[list[int]] = []

    def send(key: str, items: list[int]):
        started.append(items)

        async def reply() -> None:
            await asyncio.sleep(0)

        return reply()

    batcher = TurnBatcher(send, limit=10)
    waiting = batcher.add("a", 1)
    assert started == []
    await asyncio.sleep(0)  # the turn ends: the batch's callback ran before this task resumed
    assert started == [[1]]
    await waiting


async def test_a_send_that_fails_at_once_fails_every_caller():
    def send(key: str, items: list[int]):
        raise ConnectionError("no connection")

    batcher = TurnBatcher(send, limit=10)
    results = await asyncio.gather(batcher.add("a", 1), batcher.add("a", 2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
