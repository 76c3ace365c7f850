"""The access log's handler: lines flushed together after a short delay, none lost at the end."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from service.observability.logging import JsonFormatter, LazyFlushedHandler


class CountingBuffer(io.StringIO):
    """A stream that keeps what was flushed apart from what was only written."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.flushed = ""

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.getvalue()


def logger_on(stream: CountingBuffer, delay: float = 0.05) -> logging.Logger:
    handler = LazyFlushedHandler(stream, delay)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test.turn_flushed.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_of_the_delay_are_flushed_together_after_it():
    stream = CountingBuffer()
    logger = logger_on(stream, delay=0.3)

    async def main() -> None:
        logger.info("line 0")
        await asyncio.sleep(0)
        for n in range(1, 5):  # later turns, inside the delay
            logger.info("line %d", n)
            await asyncio.sleep(0.005)
        assert stream.flushes == 0  # written, not yet flushed
        await asyncio.sleep(0.3)  # the flush's timer was set first: it has run
        assert stream.flushes == 1 and stream.flushed.count("line") == 5
        logger.info("line 5")  # the next line starts the next delay
        await asyncio.sleep(0.35)
        assert stream.flushes == 2 and stream.flushed.count("line") == 6

    asyncio.run(main())


def test_a_line_logged_after_a_loop_ended_with_its_flush_pending_is_flushed():
    stream = CountingBuffer()
    logger = logger_on(stream)

    async def main() -> None:
        logger.info("last line of the loop")  # its flush is due after the loop has ended

    asyncio.run(main())
    logger.info("outside any loop")
    assert "last line of the loop" in stream.flushed and "outside any loop" in stream.flushed

    async def again() -> None:
        logger.info("in a new loop")  # flushed there, though the old loop's flush never ran
        await asyncio.sleep(0.07)

    asyncio.run(again())
    assert "in a new loop" in stream.flushed


def test_access_lines_go_straight_to_the_only_handler_and_through_logging_otherwise(
    monkeypatch,
):
    from service.observability import logging as gateway_logging

    stream = CountingBuffer()
    handler = LazyFlushedHandler(stream)
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


def test_line_buffer_writes_whole_lines_in_pieces_a_pipe_keeps_whole(monkeypatch):
    import os
    import select

    from service.observability.logging import LineBuffer

    read_end, write_end = os.pipe()
    writes: list[bytes] = []
    real_write = os.write

    def counted(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counted)
    buffer = LineBuffer(write_end)
    lines = [f'{{"n":{n},"pad":"{"x" * 300}"}}\n' for n in range(40)]
    long_line = '{"prompt":"' + "y" * (2 * select.PIPE_BUF) + '"}\n'
    try:
        for line in [*lines[:20], long_line, *lines[20:]]:
            buffer.write(line)
        assert writes == []  # held until flushed
        buffer.flush()
        assert 4 <= len(writes) <= 6  # 41 lines, ~13 KB of short ones plus the long one
        assert all(w.endswith(b"\n") for w in writes)
        assert all(len(w) <= select.PIPE_BUF for w in writes if w != long_line.encode())
        assert long_line.encode() in writes  # alone: no piece is longer than it must be
        received = b""
        while len(received) < sum(len(w) for w in writes):
            received += os.read(read_end, 1 << 16)
        assert received.decode() == "".join([*lines[:20], long_line, *lines[20:]])
        buffer.flush()
        assert len(writes) <= 6  # nothing new, nothing written
    finally:
        os.close(read_end)
        os.close(write_end)
