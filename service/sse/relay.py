"""The relay loop: an upstream SSE response to the client, event by event, as it arrives.

The hot path works on bytes: each network read is cut at the last complete event and sent on
at once (a partial event waits for its end, nothing else waits). Per event it checks only the
shape (the dialect's prefix and a closing `}`); it parses no JSON per event. Lines may end in
CRLF, LF or CR, as the SSE standard allows; such streams are relayed with LF line ends. No
event larger than `max_event_bytes` is held or relayed, finished or not: the stream ends with
the dialect's error event instead.

Each stream has one watcher task on `receive()` (`disconnect.py`): the client's disconnect
cancels the relay at once, which closes the upstream request. A client that stops reading
holds the relay in `send()` (uvicorn's flow control), so the relay stops reading the upstream
and nothing piles up in the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from starlette.types import Receive, Send

from service.observability.metrics import ACTIVE_STREAMS, UPSTREAM_ERRORS
from service.server.disconnect import ClientDisconnected, cancelled_on_disconnect
from service.sse.dialects import Dialect
from service.sse.streams import StreamSet
from service.usage.record import Usage

log = logging.getLogger("service.sse")

_FINISH_SECONDS = 1.0
_FINISH_MAX_BYTES = 64 * 1024
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: don't buffer
]


@dataclass(slots=True)
class RelayResult:
    completed: bool  # reached the dialect's terminal event
    disconnected: bool  # the client went away first
    usage: Usage | None  # the last usage the upstream reported
    events: int  # events relayed
    response_id: str | None = None  # Responses API: the id from `response.created`


async def relay_sse(
    upstream: httpx.Response,
    receive: Receive,
    send: Send,
    streams: StreamSet,
    dialect: Dialect,
    *,
    idle_timeout: float,
    max_event_bytes: int,
) -> RelayResult:
    """Send the SSE response for an open 2xx upstream stream; closes `upstream`."""
    loop = asyncio.get_running_loop()
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    stream = streams.open(send, loop.time())
    ACTIVE_STREAMS.inc()
    result = RelayResult(completed=False, disconnected=False, usage=None, events=0)
    error: str | None = None
    last = b""  # the events that end the stream: sent with the end of the body, in one write
    framer = Framer(dialect, max_event_bytes)
    chunks = upstream.aiter_raw()
    try:
        async with cancelled_on_disconnect(receive):
            async for data in chunks:
                out, events, done, problem = framer.feed(data)
                result.events += events
                if out:
                    out = dialect.relayed(out)
                if done:
                    result.completed = True
                    last = out
                    break
                if out:
                    stream.last_send = loop.time()
                    stream.sending = True
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    stream.sending = False
                if problem is not None:
                    error = problem
                    break
            else:
                error = "the upstream closed the stream before it was complete"
    except ClientDisconnected:
        result.disconnected = True
    except httpx.ReadTimeout:
        error = f"no data from the upstream for {idle_timeout:g}s"
    except httpx.HTTPError as exc:
        error = f"the upstream connection failed mid-stream ({type(exc).__name__})"
    finally:
        streams.close(stream)
        ACTIVE_STREAMS.dec()
        if not result.completed:
            await upstream.aclose()
    result.usage = dialect.usage()
    result.response_id = dialect.response_id
    if result.disconnected:
        return result
    if error is not None:
        UPSTREAM_ERRORS.labels("mid_stream").inc()
        log.warning("stream ended with an error: %s", error)
        last = dialect.error_event(error)
    await send({"type": "http.response.body", "body": last, "more_body": False})
    if result.completed:
        await _finish(upstream, chunks)
    return result


class Framer:
    """Cuts network reads into complete events and checks them; holds at most one partial one.

    The partial event lives in a bytearray (appending is amortised, never a quadratic
    re-concatenation) and may not grow past `max_event_bytes`.
    """

    __slots__ = (
        "_boundary",
        "_cr",
        "_fast",
        "_max",
        "_one_line",
        "_pattern",
        "_pending",
        "_terminals",
    )

    def __init__(self, dialect: Dialect, max_event_bytes: int) -> None:
        self._fast = dialect.fast_prefix
        self._terminals = dialect.terminals
        self._one_line = dialect.fast_lines == 1  # a fast event is one line: `data: {...}`
        self._boundary = b"}\n\n" + dialect.fast_prefix  # between two fast events
        self._pattern = _batch_pattern(dialect.fast_event, dialect.terminals)
        self._max = max_event_bytes
        self._pending = bytearray()
        self._cr = False  # the previous read ended in CR: a LF starting this one belongs to it

    def feed(self, data: bytes) -> tuple[bytes, int, bool, str | None]:
        """Take one network read: (complete events to send, how many, whether they end the
        stream, why the stream must be cut after them — or None)."""
        if self._cr or b"\r" in data:
            data = self._to_lf(data)
        pending = self._pending
        if pending:
            search_from = len(pending) - 1  # a blank line may straddle the two reads
            pending += data
            end = pending.rfind(b"\n\n", search_from)
            if end < 0:
                return b"", 0, False, self._pending_problem()
            end += 2
            batch = bytes(pending[:end])
            del pending[:end]
        else:
            end = data.rfind(b"\n\n")
            if end < 0:
                pending += data
                return b"", 0, False, self._pending_problem()
            end += 2
            batch = data if end == len(data) else data[:end]
            if end < len(data):
                pending += data[end:]
        out, events, done, problem = self._check(batch)
        if not done and problem is None:
            problem = self._pending_problem()
        return out, events, done, problem

    def _to_lf(self, data: bytes) -> bytes:
        if self._cr and data.startswith(b"\n"):
            data = data[1:]
        self._cr = data.endswith(b"\r")
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _pending_problem(self) -> str | None:
        if len(self._pending) <= self._max:
            return None
        self._pending = bytearray()
        return self._too_large()

    def _too_large(self) -> str:
        return f"the upstream sent an event larger than {self._max} bytes"

    def _check(self, batch: bytes) -> tuple[bytes, int, bool, str | None]:
        """The well-formed events of `batch` up to the terminal one, or up to a bad one."""
        if len(batch) <= self._max:
            # Most reads: events of the fast shape, and at most a terminal one last.
            fast = self._counted(batch) if self._one_line else self._matched(batch)
            if fast is not None:
                return fast
        return self.check_each(batch)

    def _counted(self, batch: bytes) -> tuple[bytes, int, bool, None] | None:
        """One-line events (`data: {...}`), a terminal one last or none, checked by counting.
        The batch opens with the fast prefix, and every other fast event in it follows a
        boundary (`}`, a blank line, the prefix); if the line ends number two an event, none
        lies inside one, so each is one line of the fast shape. Both counts run in C at memory
        speed (the line ends by memchr), where a regular expression looked at every byte.
        Anything else: None."""
        end = len(batch)
        if batch.endswith(b"}\n\n"):
            fast_end = end  # a terminal event ending in `}` has no boundary before it
        else:
            fast_end = batch.rfind(b"\n\n", 0, end - 2) + 2  # where the last event starts
            if fast_end < 2:
                return (batch, 1, True, None) if batch.startswith(self._terminals) else None
            if not batch.startswith(self._terminals, fast_end):
                return None
            if not batch.endswith(b"}\n\n", 0, fast_end):
                return None
        done = fast_end < end  # a terminal event closes the batch
        events = batch.count(self._boundary, 0, fast_end) + 1 + done
        line_ends = end - len(batch.replace(b"\n", b""))
        if line_ends != 2 * events or not batch.startswith(self._fast):
            return None
        return batch, events, done, None

    def _matched(self, batch: bytes) -> tuple[bytes, int, bool, None] | None:
        """Events of a two-line fast shape, a terminal one last or none: one event by its
        blank line, many by one regular expression over the batch. Anything else: None."""
        if batch.find(b"\n\n") == len(batch) - 2:  # one event
            if batch.startswith(self._terminals):
                return batch, 1, True, None
            if batch.startswith(self._fast) and batch.endswith(b"}\n\n"):
                return batch, 1, False, None
        whole = self._pattern.fullmatch(batch)
        if whole is None:
            return None
        terminal = whole.start(1)  # -1: none
        fast_end = len(batch) if terminal < 0 else terminal
        # Fast events end in `}`: one boundary between each two, as in `_counted`.
        events = batch.count(self._boundary, 0, fast_end) + 1 if fast_end else 0
        return batch, events + (terminal >= 0), terminal >= 0, None

    def check_each(self, batch: bytes) -> tuple[bytes, int, bool, str | None]:
        """`_check` event by event, for any shape (comments, other fields, other spacing)."""
        fast, terminals = self._fast, self._terminals
        check_size = len(batch) > self._max
        parts = batch.split(b"\n\n")
        parts.pop()  # the batch ends with a blank line
        for index, part in enumerate(parts):
            if check_size and len(part) + 2 > self._max:
                return _join(parts[:index]), index, False, self._too_large()
            if part.startswith(terminals):
                if index + 1 < len(parts):
                    batch = _join(parts[: index + 1])  # nothing after the end is relayed
                return batch, index + 1, True, None
            if not (part.startswith(fast) and part.endswith(b"}")) and not _acceptable(part):
                return _join(parts[:index]), index, False, "the upstream sent a malformed event"
        return batch, len(parts), False, None


@functools.lru_cache(maxsize=8)
def _batch_pattern(fast_event: bytes, terminals: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """A batch of events of the fast shape, none terminal, then at most one terminal event
    (group 1). Stricter than the event-by-event check (one line per field, no comments):
    what it does not match is looked at event by event."""
    terminal = b"|".join(re.escape(t) for t in terminals)
    return re.compile(rb"(?:(?!%s)%s)*((?:%s)[^\n]*\n\n)?" % (terminal, fast_event, terminal))


def _join(parts: list[bytes]) -> bytes:
    return b"".join(p + b"\n\n" for p in parts)


def _acceptable(part: bytes) -> bool:
    """Events other than the fast shape: comments, other SSE fields, JSON in another spacing."""
    if not part or part.startswith(b":"):
        return True
    for line in part.split(b"\n"):
        field, _, value = line.partition(b":")
        if field in (b"event", b"id", b"retry", b""):
            continue
        if field != b"data":
            return False
        value = value.strip()
        if value == b"[DONE]":
            continue
        try:
            json.loads(value)
        except ValueError:
            return False
    return True


async def _finish(upstream: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Read the upstream response to its end after the terminal event, then close it.

    The chunked terminator follows at once (most often it came with the last event); reading
    it lets the connection go back to the pool. Closing before it would close the connection:
    a new TCP (and TLS) handshake for the next request. Whatever else follows is not relayed,
    and not read for long.
    """
    try:
        async with asyncio.timeout(_FINISH_SECONDS):
            await _drain(chunks)
    except (TimeoutError, httpx.HTTPError):
        pass
    finally:
        await upstream.aclose()


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    extra = 0
    async for data in chunks:
        extra += len(data)
        if extra > _FINISH_MAX_BYTES:
            return
