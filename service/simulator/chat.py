"""`POST /v1/chat/completions`, streaming and not, in xAI's shape (or OpenAI's).

xAI's stream: every `chat.completion.chunk` carries `system_fingerprint` and the running
`usage` (tokens and `cost_in_usd_ticks` so far), asked for or not; with
`stream_options.include_usage` a usage-only chunk (`"choices": []`) follows the last content
chunk; then `data: [DONE]`. Its last running total is the non-streaming answer's usage.
OpenAI's stream (`openai_shapes`): no usage on content chunks (`"usage": null` when it was
asked for), usage only on the trailing chunk, no xAI-only fields.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

from starlette.types import Send

from service.simulator import faults
from service.simulator.model import answer_words, model_error, word_json
from service.simulator.state import State
from service.simulator.usage import RunningChatUsage, Tokens, count_input
from service.simulator.wire import (
    Watch,
    end_stream,
    missing_field,
    send_event,
    send_json,
    start_stream,
    xai_error,
)

FINGERPRINT = "fp_5e1a2b3c4d"
_MALFORMED = b"data: {not json\n\n"
_ID_PREFIX = uuid.uuid4().hex  # random a process; a counter makes each id unique
_ID_COUNTER = itertools.count()


def completion_id() -> str:
    """A UUID-shaped id like xAI's, at the cost of a counter (uuid4 costs more than a chunk)."""
    p = _ID_PREFIX
    return f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-{next(_ID_COUNTER):012x}"


async def handle(body: Any, state: State, watch: Watch, send: Send) -> None:
    if not isinstance(body, dict):
        await xai_error(send, 400, "Failed to parse the request body as JSON")
        return
    if error := missing_field(body, model=str, messages=list):
        await xai_error(send, 422, error)
        return
    model, messages = body["model"], body["messages"]
    if not messages:
        await xai_error(send, 400, "At least one message is required")
        return
    if error := model_error(model):
        await xai_error(send, 404, error)
        return
    options = faults.options_for(body, state)
    if await faults.before_answer(options, state, watch, send):
        return
    text, image = count_input(messages)
    words = answer_words(options.chunks, image > 0)
    tokens = Tokens.of(
        model, text, image, len(words), options.cached_tokens, options.reasoning_tokens
    )
    openai = state.config.openai_shapes
    if body.get("stream") is not True:
        if not await faults.before_whole_answer(options, state, watch, send):
            await send_json(send, 200, _completion(model, words, tokens, openai))
        return
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    state.stream_started()
    completed = False
    try:
        completed = await _stream(model, words, tokens, include_usage, openai, options, watch, send)
    finally:
        state.stream_ended(watch, completed)


async def _stream(
    model: str,
    words: list[str],
    tokens: Tokens,
    include_usage: bool,
    openai: bool,
    options: faults.Options,
    watch: Watch,
    send: Send,
) -> bool:
    """Send the chunks; True if the stream ended with `[DONE]`."""
    head = (
        f'data: {{"id":"{completion_id()}","object":"chat.completion.chunk",'
        f'"created":{int(time.time())},"model":{json.dumps(model)},'
    ).encode()
    prefix = head + b'"choices":[{"index":0,"delta":{'
    tail = f',"system_fingerprint":"{FINGERPRINT}"}}\n\n'.encode()
    running = None if openai else RunningChatUsage(tokens)
    no_usage = b',"usage":null' if openai and include_usage else b""
    last = len(words) - 1
    await start_stream(send)
    for index, word in enumerate(words):
        if faults.fault_due(options, index) and await faults.mid_stream(
            options, watch, send, _MALFORMED
        ):
            return False
        role = b'"role":"assistant","content":' if index == 0 else b'"content":'
        finish = b'},"finish_reason":"stop"}]' if index == last else b'},"finish_reason":null}]'
        usage = running.after(index + 1) if running is not None else no_usage
        content = word_json(word, index == last)
        await send_event(send, b"".join((prefix, role, content, finish, usage, tail)))
        if options.delay_ms and await watch.sleep(options.delay_ms):
            return False
    trailer = b""
    if include_usage:
        if running is not None:
            usage = running.after(len(words))[1:]  # without the leading comma
        else:
            usage = b'"usage":' + json.dumps(tokens.openai_chat(), separators=(",", ":")).encode()
        trailer = head + b'"choices":[],' + usage + tail
    await end_stream(send, trailer + b"data: [DONE]\n\n")
    return True


def _completion(model: str, words: list[str], tokens: Tokens, openai: bool) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": tokens.openai_chat() if openai else tokens.chat(),
        "system_fingerprint": FINGERPRINT,
    }
