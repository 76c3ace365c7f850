"""ASGI plumbing shared by the simulator's endpoints: bodies, JSON answers, xAI errors, disconnects.

xAI's error body is `{"code": "<status description>", "error": "<message>"}` (not OpenAI's
`{"error": {...}}`); a 429 carries `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from starlette.types import Receive, Send

# xAI's `code` is the gRPC-style description of the status, the same text for every error of it.
_ERROR_TEXT = {
    400: ("Client specified an invalid argument", "Bad request"),
    401: ("Unauthenticated", "No API key provided"),
    403: ("Permission denied", "Your team does not have permission to use this model"),
    404: ("Some requested entity was not found", "Not found"),
    405: ("Method not allowed", "Method not allowed"),
    422: ("Unprocessable Entity", "Failed to deserialize the JSON body into the target type"),
    429: ("Too Many Requests", "Rate limit reached for requests"),
    500: ("Internal error", "Simulated upstream failure"),
    502: ("Bad gateway", "Simulated bad gateway"),
    503: ("Service unavailable", "Simulated overload"),
}
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Reset(Exception):
    """Raised mid-answer: uvicorn then drops the connection without ending the response."""


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def missing_field(body: dict[str, Any], **fields: type | tuple[type, ...]) -> str | None:
    """xAI's 422 message for the first required field that is absent or of the wrong type."""
    prefix = "Failed to deserialize the JSON body into the target type"
    for name, kind in fields.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if name not in body:
            return f"{prefix}: missing field `{name}`"
        if not isinstance(body[name], kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            return f"{prefix}: {name}: invalid type, expected {expected}"
    return None


async def send_json(send: Send, status: int, doc: Any, headers: tuple = ()) -> None:
    await send_bytes(send, status, json.dumps(doc).encode(), headers)


async def send_bytes(send: Send, status: int, body: bytes, headers: tuple = ()) -> None:
    start = [(b"content-type", b"application/json"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def xai_error(send: Send, status: int, message: str | None = None) -> None:
    """An error in xAI's shape: `{"code": ..., "error": ...}`."""
    code, default = _ERROR_TEXT.get(status, ("Error", f"Simulated HTTP {status}"))
    headers = ((b"retry-after", b"7"),) if status == 429 else ()
    await send_json(send, status, {"code": code, "error": message or default}, headers)


async def start_stream(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})


async def send_event(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def end_stream(send: Send, data: bytes = b"") -> None:
    await send({"type": "http.response.body", "body": data})


class Watch:
    """Notices the client's disconnect while the simulator sleeps.

    The watcher task starts on the first sleep only: a stream without delays never pays for it.
    The request's handler owns it and calls `close()` when the request ends.
    """

    __slots__ = ("_event", "_receive", "_task")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def disconnected(self) -> bool:
        return self._event.is_set()

    async def sleep(self, ms: float) -> bool:
        """Sleep `ms`; return True (early) if the client went away meanwhile."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), ms / 1000)
        return self._event.is_set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._event.set()
