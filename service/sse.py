"""Relay an upstream SSE stream to the client, event by event, as it arrives.

The hot path works on bytes: each network read is cut at the last complete event and sent on
at once (a partial event waits for its end, nothing else waits). Per event it checks only the
shape (`data: {...}`); it parses JSON just for the rare events that carry `usage` (to charge
tokens, and to drop the usage chunk the client did not ask for) or that look malformed.

A process-wide StreamSet sends `: keep-alive` comments on streams the upstream leaves silent,
so proxies don't cut them. Each stream has one watcher task on `receive()` (`disconnect.py`):
the client's disconnect cancels the relay at once, which closes the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import Receive, Send

from service.disconnect import ClientDisconnected, cancelled_on_disconnect
from service.errors import sse_error_event
from service.observability.metrics import ACTIVE_STREAMS, UPSTREAM_ERRORS

log = logging.getLogger("service.sse")

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
_FINISH_SECONDS = 1.0
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: don't buffer
]


class _Stream:
    __slots__ = ("closed", "last_send", "send")

    def __init__(self, send: Send, now: float) -> None:
        self.send = send
        self.last_send = now
        self.closed = False

    async def ping(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(Exception):
            await self.send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})


class StreamSet:
    """The streams this process relays now; sends keep-alives on the idle ones.

    Owned by the app lifespan: `start()` in the running loop, `aclose()` on shutdown.
    """

    def __init__(self, keepalive_seconds: float) -> None:
        self.keepalive_seconds = keepalive_seconds
        self._streams: set[_Stream] = set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, send: Send) -> _Stream:
        stream = _Stream(send, asyncio.get_running_loop().time())
        self._streams.add(stream)
        return stream

    def close(self, stream: _Stream) -> None:
        stream.closed = True
        self._streams.discard(stream)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.keepalive_seconds
        pings: set[asyncio.Task[None]] = set()
        while True:
            await asyncio.sleep(min(1.0, interval / 3))
            now = loop.time()
            for stream in list(self._streams):
                if now - stream.last_send >= interval:
                    stream.last_send = now
                    task = loop.create_task(stream.ping())
                    pings.add(task)
                    task.add_done_callback(pings.discard)


@dataclass(slots=True)
class RelayResult:
    completed: bool  # reached [DONE]
    disconnected: bool  # the client went away first
    usage_tokens: int | None  # total_tokens reported by the upstream
    events: int  # events relayed


async def relay_sse(
    upstream: httpx.Response,
    receive: Receive,
    send: Send,
    streams: StreamSet,
    *,
    client_wants_usage: bool,
    idle_timeout: float,
) -> RelayResult:
    """Send the SSE response for an open 2xx upstream stream; closes `upstream`."""
    loop = asyncio.get_running_loop()
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    stream = streams.open(send)
    ACTIVE_STREAMS.inc()
    result = RelayResult(completed=False, disconnected=False, usage_tokens=None, events=0)
    error: str | None = None
    buffer = b""
    chunks = upstream.aiter_raw()
    try:
        async with cancelled_on_disconnect(receive):
            async for data in chunks:
                if buffer:
                    data = buffer + data
                end = data.rfind(b"\n\n")
                if end < 0:
                    buffer = data
                    continue
                end += 2
                if end == len(data):
                    events, buffer = data, b""
                else:
                    events, buffer = data[:end], data[end:]
                events, scan = _scan(events, client_wants_usage)
                if scan.usage_tokens is not None:
                    result.usage_tokens = scan.usage_tokens
                result.events += scan.events
                if events:
                    stream.last_send = loop.time()
                    await send({"type": "http.response.body", "body": events, "more_body": True})
                if scan.bad:
                    error = "the upstream sent a malformed event"
                    break
                if scan.done:
                    result.completed = True
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
    if result.disconnected:
        return result
    if error is not None:
        UPSTREAM_ERRORS.labels("mid_stream").inc()
        log.warning("stream ended with an error: %s", error)
        await send(
            {"type": "http.response.body", "body": sse_error_event(error), "more_body": True}
        )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if result.completed:
        await _finish(upstream, chunks)
    return result


async def _finish(upstream: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Read the upstream response to its end after [DONE], then close it.

    The chunked terminator follows [DONE] at once; reading it lets the connection go back
    to the pool. Closing before it would close the connection: a new TCP (and TLS)
    handshake for the next request.
    """
    try:
        async with asyncio.timeout(_FINISH_SECONDS):
            async for _ in chunks:
                pass  # nothing should follow [DONE]; whatever does is not relayed
    except (TimeoutError, httpx.HTTPError):
        pass
    finally:
        await upstream.aclose()


@dataclass(slots=True)
class _Scan:
    events: int = 0
    usage_tokens: int | None = None
    done: bool = False
    bad: bool = False


def _scan(events: bytes, client_wants_usage: bool) -> tuple[bytes, _Scan]:
    """Check a batch of complete events; drop the usage chunk the client didn't ask for.

    Returns the bytes to send: the batch itself unless an event was dropped, rewritten or
    malformed (then the events before the malformed one), or something followed [DONE].
    """
    scan = _Scan()
    parts = events.split(b"\n\n")
    parts.pop()  # the batch ends with a separator
    has_usage = b'"usage"' in events
    out: list[bytes] = []
    changed = False
    for part in parts:
        if part.startswith(b"data: {") and part.endswith(b"}"):
            if has_usage and b'"usage"' in part:
                rewritten = _usage_event(part, client_wants_usage, scan)
                changed = changed or rewritten is not part
                if rewritten is None:
                    continue
                part = rewritten
        elif part == b"data: [DONE]":
            scan.done = True
        elif not _acceptable(part):
            scan.bad = changed = True
            break
        out.append(part)
        scan.events += 1
        if scan.done:
            break
    if not changed and len(out) == len(parts):
        return events, scan
    return b"".join(p + b"\n\n" for p in out), scan


def _usage_event(part: bytes, client_wants_usage: bool, scan: _Scan) -> bytes | None:
    try:
        chunk = json.loads(part[6:])
    except ValueError:
        scan.bad = True
        return part
    usage = chunk.get("usage") if isinstance(chunk, dict) else None
    if not isinstance(usage, dict):
        return part
    total = usage.get("total_tokens")
    if isinstance(total, int):
        scan.usage_tokens = total
    if client_wants_usage:
        return part
    if not chunk.get("choices"):
        return None  # the usage-only chunk the gateway asked for on the client's behalf
    del chunk["usage"]
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode()


def _acceptable(part: bytes) -> bool:
    """Events other than `data: {...}`: comments, other SSE fields, JSON in another spacing."""
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


def completion_as_chunk(completion: dict[str, Any], client_wants_usage: bool) -> bytes:
    """A complete chat.completion as one chat.completion.chunk event, then [DONE].

    For VISION_STREAM_FALLBACK=sse: every SSE client and SDK reads it as a stream.
    """
    choices = []
    for choice in completion.get("choices") or []:
        message = dict(choice.get("message") or {})
        choices.append(
            {
                "index": choice.get("index", 0),
                "delta": message,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    chunk = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
        "choices": choices,
    }
    out = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    if client_wants_usage and completion.get("usage") is not None:
        usage_chunk = {**chunk, "choices": [], "usage": completion["usage"]}
        out += b"data: " + json.dumps(usage_chunk, separators=(",", ":")).encode() + b"\n\n"
    return out + DONE
