"""JSON logs on stdout: one object per line, for the gateway's own lines and uvicorn's.

The access log (logger `service.access`) already writes a JSON object as its message; it is
passed through with its timestamp and level added. When the handler `configure_logging`
installs is the only one its lines would reach, `log_access` writes them to it straight,
without a `LogRecord` and the handler chain (~3 us a request); the line is the same. Nothing
here ever sees a key or a prompt unless LOG_PROMPTS is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import sys
import time
from typing import TextIO


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

    def access_line(self, created: float, message: str) -> str:
        """An access-log message (a JSON object's text) with its time, level and logger."""
        ts = self.timestamp(created)
        return f'{{"ts":"{ts}","level":"info","logger":"access",{message[1:]}'

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "service.access":
            return self.access_line(record.created, record.getMessage())
        ts = self.timestamp(record.created)
        line = {
            "ts": ts,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


FLUSH_SECONDS = 0.1


class LineBuffer:
    """Lines for a file descriptor, held until `flush`, then written in as few system calls
    as keep each write atomic: whole lines, at most PIPE_BUF bytes (worker processes share
    stdout, and a pipe never interleaves such writes); a longer line goes alone.

    Buffered whatever PYTHONUNBUFFERED says (the image sets it): unbuffered, stdout took a
    system call per access line. What a failing descriptor refuses is dropped: there is
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


class LazyFlushedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes lines as they come and flushes `delay` seconds after the first line it has not
    flushed, not once per line: under load a system call carries the lines of many requests,
    where a flush per event-loop turn still cost about one a request (0.95 writes a burst
    stream). Outside a running loop (start-up, shutdown, other threads) it flushes at once; a
    line is on the stream within `delay`."""

    def __init__(self, stream: object, delay: float = FLUSH_SECONDS) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self._delay = delay
        self._due_in: asyncio.AbstractEventLoop | None = None  # the loop a flush is due in

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().flush()
            return
        if self._due_in is not loop:  # a loop that stopped before its flush ran is no matter
            self._due_in = loop
            loop.call_later(self._delay, self._flush_now)

    def _flush_now(self) -> None:
        self._due_in = None
        super().flush()

    def write_line(self, line: str) -> bool:
        """Write one formatted line as `emit` would; False if the stream refused it."""
        self.acquire()
        try:
            try:
                self.stream.write(line + self.terminator)
            except Exception:
                return False
            with contextlib.suppress(Exception):  # written: a later flush sends it
                self.flush()
        finally:
            self.release()
        return True


_ACCESS = logging.getLogger("service.access")
_direct: LazyFlushedHandler | None = None  # configure_logging's handler, once installed


def log_access(message: str) -> None:
    """Log one access-log line (`message`: a JSON object's text) at INFO.

    Straight to configure_logging's handler when it is the only one the line would reach
    (no other handler or filter on the way, as `logging` would route it); through `logging`
    otherwise (tests capturing it, an operator's own handler) or if the write fails.
    """
    handler = _direct
    if (
        handler is not None
        and isinstance(handler.formatter, JsonFormatter)
        and handler.level <= logging.INFO
        and _only_reaches(handler)
        and handler.write_line(handler.formatter.access_line(time.time(), message))
    ):
        return
    _ACCESS.info(message)


def _only_reaches(handler: logging.Handler) -> bool:
    """Whether a record of the access logger would reach `handler` and no other one."""
    logger: logging.Logger | None = _ACCESS
    if _ACCESS.filters or handler.filters or _ACCESS.disabled:
        return False
    while logger is not None:
        if logger.handlers:
            return logger.handlers == [handler] and logger.parent is None
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def configure_logging(level: str = "info") -> None:
    """Route every logger (ours and uvicorn's) to stdout as JSON lines."""
    # Per-record work the JSON lines never show (the logging docs' "Optimization" section):
    # the caller's frame lookup walks the stack on every line.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _direct
    handler = LazyFlushedHandler(stdout_lines())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _direct = handler
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # httpx logs every upstream call at INFO: noise, and work on the hot path.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn's access log would duplicate ours, without key ids.
    logging.getLogger("uvicorn.access").disabled = True
