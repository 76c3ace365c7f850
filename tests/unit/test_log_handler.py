"""The JSON log lines and the thread that writes them: lines logged together are written
together and soon, on the writer's thread, and none is lost when it stops."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time

import pytest

from service.observability import logging as gateway_logging
from service.observability.logging import LineWriter


class CountingStream(io.StringIO):
    """A stream that keeps what was flushed apart from what was only written, and the
    threads that wrote to it."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.flushed = ""
        self.writers: set[int] = set()

    def write(self, text: str) -> int:
        self.writers.add(threading.get_ident())
        return super().write(text)

    def flush(self) -> None:
        if self.getvalue() != self.flushed:
            self.flushes += 1
            self.flushed = self.getvalue()


@pytest.fixture
def stream() -> CountingStream:
    return CountingStream()


@pytest.fixture
def writer(stream: CountingStream):
    writer = LineWriter(stream, gather=0.05)
    writer.start()
    yield writer
    writer.stop()


def logger_on(writer: LineWriter, name: str = "test.lines") -> logging.Logger:
    logger = logging.getLogger(f"{name}.{id(writer)}")
    logger.handlers[:] = [writer.handler()]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def flushed_lines(stream: CountingStream, count: int, within: float = 2.0) -> list[dict]:
    deadline = time.monotonic() + within
    while stream.flushed.count("\n") < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return [json.loads(line) for line in stream.flushed.splitlines()]


def test_lines_logged_together_are_written_together_soon_after(writer, stream):
    logger = logger_on(writer)
    started = time.monotonic()
    for n in range(5):
        logger.info("line %d", n)
    lines = flushed_lines(stream, 5)
    assert [line["message"] for line in lines] == [f"line {n}" for n in range(5)]
    assert time.monotonic() - started < 1
    assert stream.flushes == 1  # one write for the five


def test_no_line_is_written_by_the_thread_that_logs_it(writer, stream):
    logger = logger_on(writer)
    logger.info("from the caller")
    flushed_lines(stream, 1)
    assert stream.writers and threading.get_ident() not in stream.writers


def test_stopping_writes_every_line_queued_without_waiting_to_gather(stream):
    writer = LineWriter(stream, gather=5.0)  # a gathering wait stop must cut short
    writer.start()
    logger = logger_on(writer)
    for n in range(100):
        logger.info("line %d", n)
    started = time.monotonic()
    writer.stop()
    assert time.monotonic() - started < 1
    assert [json.loads(line)["message"] for line in stream.flushed.splitlines()] == [
        f"line {n}" for n in range(100)
    ]


def test_an_access_line_is_its_message_with_time_level_and_logger(
    writer, stream, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="service.access")
    access = logging.getLogger("service.access")
    monkeypatch.setattr(access, "handlers", [writer.handler()])
    monkeypatch.setattr(access, "propagate", False)
    gateway_logging.log_access('{"request_id":"r-1","status":200,"cost_usd":0.5}')
    [line] = flushed_lines(stream, 1)
    assert list(line) == ["ts", "level", "logger", "request_id", "status", "cost_usd"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert (line["level"], line["logger"]) == ("info", "access")
    assert (line["request_id"], line["status"], line["cost_usd"]) == ("r-1", 200, 0.5)


def test_an_access_line_reaches_every_handler_logging_would_route_it_to(caplog):
    caplog.set_level(logging.INFO, logger="service.access")
    gateway_logging.log_access('{"request_id":"r-2","status":200}')
    assert [r.getMessage() for r in caplog.records] == ['{"request_id":"r-2","status":200}']


def test_a_line_shows_its_arguments_as_they_were_when_logged(writer, stream):
    logger = logger_on(writer)
    state = {"step": 1}
    logger.warning("state %s", state)
    state["step"] = 2  # changed before the writer's thread formats the line
    [line] = flushed_lines(stream, 1)
    assert line["message"] == "state {'step': 1}"
    assert line["level"] == "warning"


def test_an_exception_goes_in_its_own_field(writer, stream):
    logger = logger_on(writer)
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("failed")
    [line] = flushed_lines(stream, 1)
    assert line["message"] == "failed" and line["level"] == "error"
    assert line["exception"].endswith("ValueError: bad value")


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
