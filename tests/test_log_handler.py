"""The access log's handler: one flush per event-loop turn, none lost when a loop ends."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from service.observability.logging import JsonFormatter, TurnFlushedHandler


class CountingBuffer(io.StringIO):
    """A stream that keeps what was flushed apart from what was only written."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.flushed = ""

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.getvalue()


def logger_on(stream: CountingBuffer) -> logging.Logger:
    handler = TurnFlushedHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test.turn_flushed.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_of_one_loop_turn_are_flushed_together_after_it():
    stream = CountingBuffer()
    logger = logger_on(stream)

    async def main() -> None:
        for n in range(5):
            logger.info("line %d", n)
        assert stream.flushes == 0  # written, not yet flushed
        await asyncio.sleep(0)
        assert stream.flushes == 1 and stream.flushed.count("line") == 5

    asyncio.run(main())


def test_a_line_logged_after_a_loop_ended_with_its_flush_pending_is_flushed():
    stream = CountingBuffer()
    logger = logger_on(stream)

    async def main() -> None:
        logger.info("last line of the loop")  # its flush is due in a turn that never runs

    asyncio.run(main())
    logger.info("outside any loop")
    assert "last line of the loop" in stream.flushed and "outside any loop" in stream.flushed

    async def again() -> None:
        logger.info("in a new loop")
        await asyncio.sleep(0)

    asyncio.run(again())
    assert "in a new loop" in stream.flushed


def test_access_lines_go_straight_to_the_only_handler_and_through_logging_otherwise(
    monkeypatch,
):
    from service.observability import logging as gateway_logging

    stream = CountingBuffer()
    handler = TurnFlushedHandler(stream)
    handler.setFormatter(JsonFormatter())
    monkeypatch.setattr(logging.root, "handlers", [handler])
    monkeypatch.setattr(gateway_logging, "_direct", handler)
    records: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "emit", records.append)  # `logging`'s way in, counted
    level = logging.root.level
    logging.root.setLevel(logging.INFO)
    try:
        gateway_logging.log_access('{"request_id":"straight","status":200}')
        assert records == []  # no LogRecord was made
        straight = json.loads(stream.getvalue().splitlines()[0])
        assert straight["request_id"] == "straight" and straight["status"] == 200
        assert (straight["level"], straight["logger"]) == ("info", "access")

        other = logging.NullHandler()  # an operator's handler, or a test capturing records
        monkeypatch.setattr(logging.root, "handlers", [handler, other])
        gateway_logging.log_access('{"request_id":"routed","status":200}')
    finally:
        logging.root.setLevel(level)
    assert [r.getMessage() for r in records] == ['{"request_id":"routed","status":200}']
    routed = json.loads(JsonFormatter().format(records[0]))
    assert routed.keys() == straight.keys()  # the same line either way
