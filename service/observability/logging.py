"""JSON logs on stdout: one object per line, for the gateway's own lines and uvicorn's.

No request writes a line itself. `configure_logging` puts a `QueueHandler` on the root
logger: a record goes on a queue (a put that never blocks the event loop), and a
`QueueListener` thread formats the lines and writes them, those logged close together in one
system call. The listener is started by `configure_logging` and stopped at exit (or by
`stop_logging`), after it wrote every line queued. The access log (logger `service.access`)
already carries a JSON object as its message; its line adds the time, level and logger.
Nothing here ever sees a key or a prompt unless LOG_PROMPTS is set.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import queue
import select
import sys
import threading
import time
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

# Loggers whose messages are JSON objects' text (access lines, admin audit lines): merged
# into the line, not quoted as a message.
_STRUCTURED = {"service.access": "access", "service.admin": "admin"}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1  # the whole second `_stamp` spells
        self._stamp = ""

    def timestamp(self, created: float) -> str:
        """ISO 8601 UTC, in milliseconds: `2026-11-27T18:24:53.123Z`."""
        second = int(created)
        if second != self._second:  # most lines share their second with the one before
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        ts = self.timestamp(record.created)
        structured = _STRUCTURED.get(record.name)
        if structured is not None:  # the message is a JSON object's text
            return f'{{"ts":"{ts}","level":"info","logger":"{structured}",{record.getMessage()[1:]}'
        line = {
            "ts": ts,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


class LineBuffer:
    """Lines for a file descriptor, held until `flush`, then written in as few system calls
    as keep each write atomic: whole lines, at most PIPE_BUF bytes (worker processes share
    stdout, and a pipe never interleaves such writes); a longer line goes alone.

    Buffered whatever PYTHONUNBUFFERED says (the image sets it): unbuffered, stdout would
    take a system call per line. What a failing descriptor refuses is dropped: there is
    nowhere left to say so.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines: list[bytes] = []

    def write(self, text: str) -> int:
        self._lines.append(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        piece: list[bytes] = []
        size = 0
        for line in lines:
            if piece and size + len(line) > select.PIPE_BUF:
                self._write(b"".join(piece))
                piece, size = [], 0
            piece.append(line)
            size += len(line)
        if piece:
            self._write(b"".join(piece))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            pass


def stdout_lines() -> LineBuffer | TextIO:
    """A LineBuffer on stdout's descriptor; stdout itself where it has none (captured)."""
    try:
        sys.stdout.flush()
        return LineBuffer(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return sys.stdout


class JsonLines(logging.Handler):
    """Formats each record as a JSON line onto `out`; `flush` sends what it holds."""

    def __init__(self, out: LineBuffer | TextIO) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.out.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            self.out.flush()
        finally:
            self.release()


class RecordQueue(QueueHandler):
    """The root logger's handler: puts each record on the queue, as it needs to be read on
    another thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The access log's records hold a finished string: they go as they are. Arguments
        # may change once the caller returns, and a traceback holds the caller's frames:
        # those are turned into text now, on a copy (other handlers see the record whole).
        if not record.args and not record.exc_info:
            return record
        prepared = copy.copy(record)
        prepared.msg = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            prepared.exc_info = None
        return prepared


_TRACEBACKS = logging.Formatter()
GATHER_SECONDS = 0.05  # how long a line waits for others to share its write


class LineWriter(QueueListener):
    """The thread that writes the queued records as JSON lines to `out`.

    Woken by a line after a quiet spell, it waits `gather` seconds for the lines that follow
    and writes them all at once: under load one system call carries the lines of many
    requests, and no put wakes a waiting thread. A line is written within about `gather`.
    """

    def __init__(self, out: LineBuffer | TextIO, gather: float = GATHER_SECONDS) -> None:
        self.lines = JsonLines(out)
        super().__init__(queue.SimpleQueue(), self.lines, respect_handler_level=True)
        self._gather = gather
        self._stopping = threading.Event()

    def handler(self) -> RecordQueue:
        """A handler that puts records on this writer's queue."""
        return RecordQueue(self.queue)

    def dequeue(self, block: bool) -> logging.LogRecord | None:
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            pass
        self.lines.flush()  # the queue is drained: what it held goes out in one write
        record = self.queue.get(block)
        self._stopping.wait(self._gather)
        return record

    def start(self) -> None:
        self._stopping.clear()
        super().start()

    def stop(self) -> None:
        """Write every line queued before this call, then end the thread."""
        self._stopping.set()  # no gathering wait from now on
        super().stop()
        self.lines.flush()


_writer: LineWriter | None = None  # configure_logging's, while it runs


def configure_logging(level: str = "info") -> None:
    """Route every logger (ours and uvicorn's) to stdout as JSON lines, through a LineWriter
    this starts (and `stop_logging` stops, at exit at the latest)."""
    # Per-record work the JSON lines never show (the logging docs' "Optimization" section).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _writer
    stop_logging()
    _writer = LineWriter(stdout_lines())
    root = logging.getLogger()
    root.handlers[:] = [_writer.handler()]
    _writer.start()
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # httpx logs every upstream call at INFO: noise, and work on the hot path.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn's access log would duplicate ours, without key ids.
    logging.getLogger("uvicorn.access").disabled = True


@atexit.register
def stop_logging() -> None:
    """Write every line queued and stop configure_logging's writer; a line logged after
    this (late in the exit) is written at once, from the thread that logs it."""
    global _writer
    writer, _writer = _writer, None
    if writer is None:
        return
    direct = logging.StreamHandler(sys.stdout)
    direct.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [direct if isinstance(h, RecordQueue) else h for h in root.handlers]
    writer.stop()


_ACCESS = logging.getLogger("service.access")


def log_access(message: str) -> None:
    """Log one access-log line (`message`: a JSON object's text) at INFO.

    The record is made here, not by `Logger.info`, which would look up the caller's frame
    on every request for a line that never shows it.
    """
    if _ACCESS.isEnabledFor(logging.INFO):
        _ACCESS.handle(_ACCESS.makeRecord(_ACCESS.name, logging.INFO, "", 0, message, None, None))
