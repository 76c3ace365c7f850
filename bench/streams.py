"""What the benchmark's clients send, and how they tell a complete answer from a broken one.

Shared by the load generator and the soak. The checks work on the raw body bytes with C-speed
searches (no JSON parsing per chunk: the load generator shares the machine's cores with the
target), and accept both stream shapes the simulator speaks:

- chat, OpenAI's shape: `data: {chunk}` per content chunk, then `data: [DONE]`; with
  `stream_options.include_usage`, one usage-only chunk (`"choices": []`) before `[DONE]`;
- chat, xAI's shape: the same, but every chunk also carries the running `usage` (so "has
  usage" does not mark the usage-only chunk: its empty `choices` does);
- Responses: `event: <type>` / `data: {...}` pairs from `response.created` through one
  `response.output_text.delta` per content chunk to `response.completed`, last.
"""

from __future__ import annotations

import json
import re

PATHS = {
    "chat": "/api/v1/chat/completions",
    "responses": "/api/v1/responses",
    "images": "/api/v1/images/generations",
}
MODEL = "grok-4-1-fast-non-reasoning"
PROMPT = "Write a short story about a space adventure"

_DONE = b"data: [DONE]\n\n"
_USAGE_ONLY = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_DELTA_EVENT = re.compile(rb"^event: ?response\.output_text\.delta\r?$", re.M)
_DELTA_TYPE = re.compile(rb'"type"\s*:\s*"response\.output_text\.delta"')
_COMPLETED = re.compile(rb'"type"\s*:\s*"response\.completed"|^event: ?response\.completed', re.M)


def request_body(
    api: str,
    stream: bool = True,
    chunks: int = 20,
    delay_ms: float = 0,
    include_usage: bool = False,
    **sim: object,
) -> bytes:
    """The JSON body of one request; `sim` options reach the simulator through the gateway."""
    options = {"chunks": chunks, "delay_ms": delay_ms, **sim}
    if api == "images":
        return json.dumps({"model": "grok-2-image-1212", "prompt": "a red fox", "n": 1}).encode()
    if api == "responses":
        body: dict = {"model": MODEL, "input": PROMPT, "stream": stream, "sim": options}
    else:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": stream,
            "sim": options,
        }
        if stream and include_usage:
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def check(
    api: str, stream: bool, raw: bytes, chunks: int, include_usage: bool = False
) -> str | None:
    """None if a 200 answer's body is complete, else a short reason ("truncated", ...)."""
    if api == "images":
        return None if b'"data"' in raw else "bad_body"
    if not stream:
        return None if raw.lstrip().startswith(b"{") and b'"error"' not in raw[:16] else "bad_body"
    if api == "responses":
        return check_responses_stream(raw, chunks)
    return check_chat_stream(raw, chunks, include_usage)


def check_chat_stream(raw: bytes, chunks: int, include_usage: bool) -> str | None:
    if not raw.endswith(_DONE):
        return "truncated"
    if b'data: {"error"' in raw:
        return "error_event"
    usage_only = len(_USAGE_ONLY.findall(raw))
    content = raw.count(b"data: {") - usage_only
    if content != chunks:
        return "truncated" if content < chunks else "extra_chunks"
    if usage_only > (1 if include_usage else 0):
        return "unasked_usage_chunk" if not include_usage else "extra_usage_chunks"
    return None


def check_responses_stream(raw: bytes, chunks: int) -> str | None:
    events = raw.rstrip(b"\r\n").rsplit(b"\n\n", 1)
    if not _COMPLETED.search(events[-1]):
        return "error_event" if b"event: error" in raw else "truncated"
    deltas = len(_DELTA_EVENT.findall(raw)) or len(_DELTA_TYPE.findall(raw))
    if deltas != chunks:
        return "truncated" if deltas < chunks else "extra_chunks"
    return None
