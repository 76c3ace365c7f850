"""A test upstream controlled byte for byte: a raw asyncio HTTP/1.1 server in its own process.

It speaks xAI where the gateway expects xAI (usage on every chunk, cost ticks, Responses
events, `/v1/api-key`) and misbehaves on request. Each POST picks its case with a JSON body
field the gateway passes on, `"hostile": {"case": ..., ...}`:

- `xai`: chat chunks with the running usage on every chunk (`chunks`, `usage_chunk`,
  `spaced`, `line_end` lf/crlf/cr, `piece` bytes per write, `delay_ms`);
- `openai`: chat chunks, usage only on a trailing usage-only chunk;
- `responses`: Responses API events ending in `response.completed` (`chunks`, `fail_after`);
- `endless_event`: `data: {"x":"aaa…` for `size` bytes, never a blank line;
- `big_event`: one complete event of `size` bytes between two normal chunks;
- `bad_usage`: a chunk, a malformed usage event (`shape` closed/open), `[DONE]`, one write;
- `firehose`: well-formed chunks of `event_bytes`, as fast as they are read, `size` in all;
- `huge_json`: a 200 JSON body of `size` bytes (`content_length` declared, or chunked);
- `huge_error`: a 500 whose body is `size` bytes;
- `raw`: `status`, `content_type` and `body` as given (HTML, empty, arrays, SSE…);
- `redirect`: `status` (302, 307…) with `Location` pointing at this server's `/steal`.

Big bodies are generated piece by piece and never held. `GET /v1/api-key` answers as
`POST /control {"api_key": "ok|blocked|disabled|team_blocked|rejected|404|500|slow|html"}`
says. `GET /stats` (requests seen, bytes sent per case, `/steal` hits), `POST /reset`.

Run: `python -m tests.support.hostile_upstream --port N` (tests: `start_hostile_upstream()`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

PROMPT_TOKENS = 12
CACHED_TOKENS = 4
TICKS_PER_TOKEN = 25_000  # the running cost grows with each chunk
MODEL = "grok-4.3"
_PIECE = 64 * 1024
_REASONS = {
    200: "OK",
    302: "Found",
    307: "Temporary Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
}


# --- what the upstream sends (importable: tests compare the gateway's bytes with these) ---


def running_usage(completion_tokens: int) -> dict[str, Any]:
    """xAI's usage object after `completion_tokens` tokens: the running total, cost included."""
    total = PROMPT_TOKENS + completion_tokens
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
        "prompt_tokens_details": {
            "text_tokens": PROMPT_TOKENS,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": CACHED_TOKENS,
        },
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        "num_sources_used": 0,
        "cost_in_usd_ticks": total * TICKS_PER_TOKEN,
    }


def _compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def xai_events(chunks: int = 5, usage_chunk: bool = True, spaced: bool = False) -> list[bytes]:
    """An xAI chat stream, one `data: ...\\n\\n` event per item, `[DONE]` last."""
    events = []
    for index in range(chunks):
        last = index == chunks - 1
        delta: dict[str, Any] = {"content": f"word{index} "}
        if index == 0:
            delta["role"] = "assistant"
        chunk = {
            "id": "chatcmpl-hostile",
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
            "usage": running_usage(index + 1),
            "system_fingerprint": "fp_hostile",
        }
        events.append(b"data: " + _compact(chunk) + b"\n\n")
    if usage_chunk:
        tail = {
            "id": "chatcmpl-hostile",
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": MODEL,
            "choices": [],
            "usage": running_usage(chunks),
        }
        text = json.dumps(tail).encode() if spaced else _compact(tail)
        if spaced:
            text = text.replace(b'"choices": []', b'"choices" :  [ ]')
        events.append(b"data: " + text + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def openai_events(chunks: int = 5, usage_chunk: bool = True) -> list[bytes]:
    """An OpenAI-shaped chat stream: usage only on the trailing usage-only chunk."""
    events = []
    for index in range(chunks):
        chunk = {
            "id": "chatcmpl-openai",
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": f"w{index} "}, "finish_reason": None}],
        }
        events.append(b"data: " + _compact(chunk) + b"\n\n")
    if usage_chunk:
        usage = {"prompt_tokens": 7, "completion_tokens": chunks, "total_tokens": 7 + chunks}
        tail = {"id": "chatcmpl-openai", "choices": [], "usage": usage}
        events.append(b"data: " + _compact(tail) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


RESPONSE_ID = "resp_hostile_0001"


def responses_events(chunks: int = 4) -> list[bytes]:
    """A Responses API stream: created, deltas, completed with usage (xAI's cost included)."""

    def event(name: str, doc: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _compact({"type": name, **doc}) + b"\n\n"

    response = {"id": RESPONSE_ID, "object": "response", "status": "in_progress", "usage": None}
    events = [
        event("response.created", {"response": response}),
        event("response.in_progress", {"response": response}),
    ]
    for index in range(chunks):
        events.append(event("response.output_text.delta", {"delta": f"t{index} "}))
    usage = {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": chunks,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 9 + chunks + 3,
        "cost_in_usd_ticks": 777_000,
    }
    done = {**response, "status": "completed", "usage": usage}
    events.append(event("response.completed", {"response": done}))
    return events


def with_line_end(event: bytes, line_end: str) -> bytes:
    return event.replace(b"\n", {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}[line_end])


# --- the server ---------------------------------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.api_key = "ok"
        self.requests: list[dict[str, Any]] = []
        self.bytes_sent: dict[str, int] = {}
        self.steal_hits = 0

    def public(self) -> dict[str, Any]:
        return {
            "requests": self.requests[-20:],
            "request_count": len(self.requests),
            "bytes_sent": self.bytes_sent,
            "steal_hits": self.steal_hits,
            "api_key": self.api_key,
        }


class _Conn:
    def __init__(self, writer: asyncio.StreamWriter, state: _State, case: str) -> None:
        self.writer = writer
        self.state = state
        self.case = case

    async def head(self, status: int, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("connection: close")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()

    async def whole(self, status: int, content_type: str | None, body: bytes) -> None:
        headers = [("content-length", str(len(body)))]
        if content_type is not None:
            headers.append(("content-type", content_type))
        await self.head(status, headers)
        await self.write(body)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()
        sent = self.state.bytes_sent
        sent[self.case] = sent.get(self.case, 0) + len(data)

    async def chunk(self, data: bytes) -> None:
        if data:
            await self.write(b"%x\r\n" % len(data) + data + b"\r\n")

    async def end_chunks(self) -> None:
        await self.write(b"0\r\n\r\n")

    async def stream(self, pieces: Iterator[bytes], content_type: str = "text/event-stream"):
        await self.head(200, [("content-type", content_type), ("transfer-encoding", "chunked")])
        for piece in pieces:
            await self.chunk(piece)
        await self.end_chunks()


def _filler(size: int, prefix: bytes = b"") -> Iterator[bytes]:
    """`prefix` then `a`s up to `size` bytes, in 64 KiB pieces: never held whole."""
    block = b"a" * _PIECE
    yield prefix
    left = size - len(prefix)
    while left > 0:
        yield block[: min(left, _PIECE)]
        left -= _PIECE


def _cut(data: bytes, piece: int) -> Iterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


async def _chat_case(conn: _Conn, case: str, options: dict[str, Any]) -> None:
    if case in ("xai", "openai"):
        if case == "xai":
            events = xai_events(
                options.get("chunks", 5), options.get("usage_chunk", True), options.get("spaced")
            )
        else:
            events = openai_events(options.get("chunks", 5), options.get("usage_chunk", True))
        line_end = options.get("line_end", "lf")
        events = [with_line_end(e, line_end) for e in events]
        delay = options.get("delay_ms", 0) / 1000
        piece = options.get("piece")
        await conn.head(
            200, [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
        )
        for event in events:
            for part in _cut(event, piece) if piece else (event,):
                await conn.chunk(part)
                if delay:
                    await asyncio.sleep(delay)
        await conn.end_chunks()
    elif case == "responses":
        events = responses_events(options.get("chunks", 4))
        fail_after = options.get("fail_after")
        await conn.head(
            200, [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
        )
        for index, event in enumerate(events):
            if fail_after is not None and index == fail_after:
                conn.writer.transport.abort()  # a drop mid-stream: no terminating chunk
                return
            await conn.chunk(event)
        await conn.end_chunks()
    elif case == "endless_event":
        await conn.stream(_filler(options.get("size", 300_000_000), b'data: {"x":"'))
    elif case == "big_event":
        first, *_ = xai_events(1, usage_chunk=False)
        size = options.get("size", 2 * 1024 * 1024)

        def pieces() -> Iterator[bytes]:
            yield first
            yield from _filler(size - 4, b'data: {"x":"')
            yield b'"}\n\n'
            yield first
            yield b"data: [DONE]\n\n"

        await conn.stream(pieces())
    elif case == "bad_usage":
        first, *_ = xai_events(1, usage_chunk=False)
        bad = (
            b'data: {"choices":[],"usage":{"total_tokens":}}\n\n'
            if options.get("shape", "closed") == "closed"
            else b'data: {"choices":[],"usage":{"total_tokens":9\n\n'
        )
        await conn.stream(iter([first + bad + b"data: [DONE]\n\n"]))
    elif case == "firehose":
        size, event_bytes = options.get("size", 300_000_000), options.get("event_bytes", 16384)
        template = xai_events(1, usage_chunk=False)[0]
        pad = max(0, event_bytes - len(template))
        event = template.replace(b'"word0 "', b'"' + b"w" * pad + b'"', 1)

        def pieces() -> Iterator[bytes]:
            for _ in range(size // len(event)):
                yield event
            yield b"data: [DONE]\n\n"

        await conn.stream(pieces())
    elif case == "huge_json":
        size = options.get("size", 300_000_000)
        pieces = _filler(size - 2, b'{"pad":"')
        if options.get("content_length"):
            await conn.head(
                200, [("content-type", "application/json"), ("content-length", str(size))]
            )
            for piece in pieces:
                await conn.write(piece)
            await conn.write(b'"}')
        else:

            def closed() -> Iterator[bytes]:
                yield from pieces
                yield b'"}'

            await conn.stream(closed(), content_type="application/json")
    elif case == "huge_error":
        size = options.get("size", 300_000_000)
        prefix = b'{"code":"Internal error","error":"huge failure '
        await conn.head(500, [("content-type", "application/json"), ("content-length", str(size))])
        for piece in _filler(size - 2, prefix):
            await conn.write(piece)
        await conn.write(b'"}')
    elif case == "raw":
        body = options.get("body", "").encode()
        await conn.whole(options.get("status", 200), options.get("content_type"), body)
    elif case == "redirect":
        port = conn.writer.get_extra_info("sockname")[1]
        location = f"http://127.0.0.1:{port}/steal"
        await conn.head(
            options.get("status", 302), [("location", location), ("content-length", "0")]
        )
    else:
        await conn.whole(400, "application/json", _compact({"code": "hostile", "error": case}))


_API_KEY_ANSWERS = {
    "ok": (200, {}),
    "blocked": (200, {"api_key_blocked": True}),
    "disabled": (200, {"api_key_disabled": True}),
    "team_blocked": (200, {"team_blocked": True}),
}


async def _api_key(conn: _Conn, mode: str) -> None:
    if mode in _API_KEY_ANSWERS:
        status, flags = _API_KEY_ANSWERS[mode]
        doc = {
            "redacted_api_key": "xai-...h0st",
            "name": "hostile",
            "acls": ["api-key:model:*", "api-key:endpoint:*"],
            "api_key_blocked": False,
            "api_key_disabled": False,
            "team_blocked": False,
            **flags,
        }
        await conn.whole(status, "application/json", _compact(doc))
    elif mode == "rejected":
        error = {"code": "Client specified an invalid argument", "error": "Incorrect API key"}
        await conn.whole(400, "application/json", _compact(error))
    elif mode == "slow":
        await asyncio.sleep(3600)
    elif mode == "html":
        await conn.whole(200, "text/html", b"<html>hello</html>")
    else:
        await conn.whole(int(mode), "application/json", _compact({"error": f"HTTP {mode}"}))


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _State):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = target.partition("?")[0]
        if path not in ("/stats", "/control", "/reset"):
            state.requests.append(
                {"method": method, "path": path, "headers": headers, "body": body}
            )
        options = body.get("hostile") if isinstance(body, dict) else None
        options = options if isinstance(options, dict) else {}
        conn = _Conn(writer, state, options.get("case", path))
        if path == "/stats":
            await conn.whole(200, "application/json", _compact(state.public()))
        elif path == "/reset" and method == "POST":
            state.__init__()
            await conn.whole(200, "application/json", b"{}")
        elif path == "/control" and method == "POST":
            state.api_key = body.get("api_key", state.api_key)
            await conn.whole(200, "application/json", b"{}")
        elif path == "/steal":
            state.steal_hits += 1
            await conn.whole(200, "application/json", b'{"stolen":true}')
        elif path == "/v1/api-key" and method == "GET":
            await _api_key(conn, state.api_key)
        elif path == "/v1/models" and method == "GET":
            doc = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
            await conn.whole(200, "application/json", _compact(doc))
        elif method == "POST" and path.startswith("/v1/"):
            await _chat_case(conn, options.get("case", ""), options)
        else:
            await conn.whole(404, "application/json", _compact({"error": f"no route {path}"}))
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass  # the gateway hung up: the point of most cases
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(host: str, port: int) -> None:
    state = _State()
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, state), host, port, limit=1024 * 1024
    )
    async with server:
        await server.serve_forever()


def start_hostile_upstream():
    """Start it in its own process on a free port; `.stop()` the returned Proc."""
    from tests.support.processes import _spawn, free_port

    port = free_port()
    args = [sys.executable, "-m", "tests.support.hostile_upstream", "--port", str(port)]
    return _spawn(args, dict(os.environ), port, "/stats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options.host, options.port))


if __name__ == "__main__":
    main()
