"""JSON logs on stdout: one object per line, for the gateway's own lines and uvicorn's.

The access log (logger `service.access`) already writes a JSON object as its message; it is
passed through with its timestamp and level added. Nothing here ever sees a key or a prompt
unless LOG_PROMPTS is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1  # the whole second `_stamp` spells
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # most lines share their second with the one before
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        ts = f"{self._stamp}.{int(record.msecs):03d}Z"
        if record.name == "service.access":
            return f'{{"ts":"{ts}","level":"info","logger":"access",{record.getMessage()[1:]}'
        line = {
            "ts": ts,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TurnFlushedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes lines as they come and flushes once per event-loop turn, not once per line: the
    lines of the requests that end in one turn reach the stream in one system call. Outside
    a running loop (start-up, shutdown, other threads) it flushes at once."""

    def __init__(self, stream: object) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self._due_in: asyncio.AbstractEventLoop | None = None  # the loop a flush is due in

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().flush()
            return
        if self._due_in is not loop:  # a loop that stopped before its flush ran is no matter
            self._due_in = loop
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._due_in = None
        super().flush()


def configure_logging(level: str = "info") -> None:
    """Route every logger (ours and uvicorn's) to stdout as JSON lines."""
    # Per-record work the JSON lines never show (the logging docs' "Optimization" section):
    # the caller's frame lookup walks the stack on every line.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = TurnFlushedHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # httpx logs every upstream call at INFO: noise, and work on the hot path.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn's access log would duplicate ours, without key ids.
    logging.getLogger("uvicorn.access").disabled = True
