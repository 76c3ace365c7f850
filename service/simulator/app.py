"""The simulated xAI API: plain ASGI, cheap enough never to be the benchmark's bottleneck.

Chat (streaming and not, usage chunk on `stream_options.include_usage`), images, models, and
xAI's error shape `{"code": ..., "error": ...}`. Per request, the JSON body field `"sim"`
sets `chunks`, `delay_ms`, `first_byte_delay_ms` and a `fault` (`drop`, `stall`,
`bad_chunk`, `status`), optionally only for the first `fault_times` requests with
the same `key`. `GET /sim/stats` and `POST /sim/reset` are for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

MODELS = (
    "grok-4-1-fast-non-reasoning",
    "grok-4-1-fast-reasoning",
    "grok-2-image-1212",
    "grok-2-vision-1212",
)
_ERROR_TEXT = {
    400: ("Client specified an invalid argument", "Bad request"),
    401: ("Unauthenticated", "No API key provided"),
    403: ("Permission denied", "Your team does not have permission to use this model"),
    404: ("Some requested entity was not found", "Not found"),
    422: ("Unprocessable Entity", "Failed to deserialize the JSON body"),
    429: ("Too Many Requests", "Rate limit reached for requests"),
    500: ("Internal error", "Simulated upstream failure"),
    502: ("Bad gateway", "Simulated bad gateway"),
    503: ("Service unavailable", "Simulated overload"),
}
_PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
_STORY = (
    "Once upon a time a small ship left the quiet harbour of Europa and sailed toward the "
    "rings of a distant giant where the crew found a signal nobody had heard before"
)
_WORDS = tuple(_STORY.split(" "))


@dataclass
class SimulatorConfig:
    chunks: int = 20
    delay_ms: float = 0
    first_byte_delay_ms: float = 0
    api_key: str | None = None
    fault: str | None = None
    fault_after: int = 2


@dataclass
class _Stats:
    requests: int = 0
    chat_requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    disconnects: int = 0
    active_streams: int = 0
    last_request: dict[str, Any] | None = None
    fault_counts: dict[str, int] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "chat_requests": self.chat_requests,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "disconnects": self.disconnects,
            "active_streams": self.active_streams,
            "last_request": self.last_request,
        }


class _Reset(Exception):
    """Raised mid-stream: uvicorn then drops the connection without ending the response."""


def create_app(config: SimulatorConfig | None = None):
    """The simulator as an ASGI app (run it under uvicorn, or in-process for --demo)."""
    config = config or SimulatorConfig()
    stats = _Stats()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == "/sim/stats":
            await _json(send, 200, stats.public())
            return
        if path == "/sim/reset" and method == "POST":
            stats.__init__()  # type: ignore[misc]
            await _json(send, 200, {"reset": True})
            return
        stats.requests += 1
        raw = await _read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = _parse(raw)
        stats.last_request = {"method": method, "path": path, "headers": headers, "body": body}
        if path == "/v1/models" and method == "GET":
            await _json(send, 200, {"object": "list", "data": [_model(m) for m in MODELS]})
            return
        if not _authorised(headers, config):
            await _xai_error(
                send,
                400,
                "Incorrect API key provided: xa***. You can obtain an API key from "
                "https://console.x.ai.",
            )
            return
        if path == "/v1/chat/completions" and method == "POST":
            stats.chat_requests += 1
            await _chat(body, raw, config, stats, receive, send)
        elif path == "/v1/images/generations" and method == "POST":
            await _images(body, send)
        else:
            await _xai_error(send, 404, f"No route for {method} {path}")

    return app


async def _chat(
    body: Any, raw: bytes, config: SimulatorConfig, stats: _Stats, receive: Receive, send: Send
) -> None:
    if not isinstance(body, dict):
        await _xai_error(send, 400, "Failed to parse the request body as JSON")
        return
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not isinstance(messages, list) or not messages:
        await _xai_error(send, 400, "Fields 'model' and 'messages' are required")
        return
    if not model.startswith(("grok-", "sim-")):
        await _xai_error(
            send,
            404,
            f"The model {model} does not exist or your team does not have access to it.",
        )
        return
    sim = _sim_options(body, config, stats)
    if sim["first_byte_delay_ms"] and await _delay_first_byte(
        sim["first_byte_delay_ms"], stats, receive
    ):
        return
    fault = sim["fault"]
    if fault == "status":
        await _xai_error(send, int(sim.get("status", 500)), sim.get("message"))
        return
    image = _has_image(messages)
    words = _answer(sim["chunks"], image)
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages) or 1
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(words),
        "total_tokens": prompt_tokens + len(words),
    }
    if body.get("stream") is not True:
        await _json(send, 200, _completion(model, words, usage))
        return
    options = body.get("stream_options") or {}
    await _stream(
        model, words, usage, options.get("include_usage") is True, sim, stats, receive, send
    )


async def _stream(
    model: str,
    words: list[str],
    usage: dict[str, int],
    include_usage: bool,
    sim: dict[str, Any],
    stats: _Stats,
    receive: Receive,
    send: Send,
) -> None:
    created = int(time.time())
    chunk_id = f"chatcmpl-sim{stats.streams_started}"
    prefix = (
        f'data: {{"id":"{chunk_id}","object":"chat.completion.chunk","created":{created},'
        f'"model":"{model}","choices":[{{"index":0,"delta":{{'
    ).encode()
    delay = sim["delay_ms"] / 1000
    fault, fault_after = sim["fault"], int(sim.get("fault_after", 2))
    stats.streams_started += 1
    stats.active_streams += 1
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    disconnected = asyncio.Event()
    watcher = None
    if delay or fault == "stall":
        watcher = asyncio.get_running_loop().create_task(_watch(receive, disconnected))
    try:
        for index, word in enumerate(words):
            if index == fault_after and fault is not None:
                if fault == "drop":
                    raise _Reset
                if fault == "bad_chunk":
                    await _body(send, b"data: {not json\n\n")
                if fault == "stall" and await _sleep(sim.get("stall_ms", 3_600_000), disconnected):
                    return
            role = b'"role":"assistant",' if index == 0 else b""
            text = json.dumps(word + ("" if index == len(words) - 1 else " ")).encode()
            finish = b'"stop"' if index == len(words) - 1 else b"null"
            await _body(
                send,
                prefix + role + b'"content":' + text + b'},"finish_reason":' + finish + b"}]}\n\n",
            )
            if delay and await _sleep(delay * 1000, disconnected):
                return
        tail = b""
        if include_usage:
            tail = (
                f'data: {{"id":"{chunk_id}","object":"chat.completion.chunk","created":{created},'
                f'"model":"{model}","choices":[],"usage":{json.dumps(usage)}}}\n\n'
            ).encode()
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})
        stats.streams_completed += 1
    finally:
        stats.active_streams -= 1
        if disconnected.is_set():
            stats.disconnects += 1
        if watcher is not None:
            watcher.cancel()


async def _sleep(ms: float, disconnected: asyncio.Event) -> bool:
    """Sleep; return True (early) if the client went away meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected.wait(), ms / 1000)
    return disconnected.is_set()


async def _delay_first_byte(ms: float, stats: _Stats, receive: Receive) -> bool:
    """Wait before answering; True (and a disconnect counted) if the client left meanwhile."""
    disconnected = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(_watch(receive, disconnected))
    try:
        if await _sleep(ms, disconnected):
            stats.disconnects += 1
            return True
        return False
    finally:
        watcher.cancel()


async def _watch(receive: Receive, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()


async def _images(body: Any, send: Send) -> None:
    if not isinstance(body, dict):
        await _xai_error(send, 400, "Failed to parse the request body as JSON")
        return
    if "stream" in body:
        await _xai_error(send, 400, "Argument not supported: stream")
        return
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        await _xai_error(send, 400, "Field 'prompt' is required")
        return
    n = body.get("n", 1)
    b64 = body.get("response_format") == "b64_json"
    data = [
        {"b64_json": _PNG_1PX} if b64 else {"url": f"https://sim.invalid/img/{i}.png"}
        for i in range(n if isinstance(n, int) and n > 0 else 1)
    ]
    for item in data:
        item["revised_prompt"] = f"A picture of {prompt}"
    await _json(send, 200, {"created": int(time.time()), "data": data})


def _sim_options(body: dict[str, Any], config: SimulatorConfig, stats: _Stats) -> dict[str, Any]:
    sim = body.get("sim") if isinstance(body.get("sim"), dict) else {}
    options = {
        "chunks": config.chunks,
        "delay_ms": config.delay_ms,
        "first_byte_delay_ms": config.first_byte_delay_ms,
        "fault": config.fault,
        "fault_after": config.fault_after,
        **sim,
    }
    times, key = sim.get("fault_times"), sim.get("key")
    if times is not None and key is not None:
        seen = stats.fault_counts.get(key, 0)
        stats.fault_counts[key] = seen + 1
        if seen >= int(times):
            options["fault"] = None
    return options


def _answer(chunks: int, image: bool) -> list[str]:
    words = (["I", "see", "an", "image:"] if image else []) + list(_WORDS)
    while len(words) < chunks:
        words += _WORDS
    return words[: max(1, chunks)]


def _completion(model: str, words: list[str], usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words)},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def _has_image(messages: list[Any]) -> bool:
    return any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
        for m in messages
    )


def _authorised(headers: dict[str, str], config: SimulatorConfig) -> bool:
    given = headers.get("authorization", "")
    if not given.startswith("Bearer ") or not given[7:]:
        return False
    return config.api_key is None or given[7:] == config.api_key


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "xai"}


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _json(send: Send, status: int, doc: Any, headers: tuple = ()) -> None:
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _xai_error(send: Send, status: int, message: str | None = None) -> None:
    code, default = _ERROR_TEXT.get(status, ("Error", f"Simulated HTTP {status}"))
    headers = ((b"retry-after", b"7"),) if status == 429 else ()
    await _json(send, status, {"code": code, "error": message or default}, headers)
