"""`/v1/responses`: create (streaming and not), retrieve and delete, as xAI serves them.

A stored response (`store` defaults to true) can be read back, deleted, and continued with
`previous_response_id`; continuing bills the whole conversation again as input, the earlier
part of it as cached tokens (xAI caches conversation history automatically). The stream is
`event: <type>\\ndata: <json with "type" and "sequence_number">\\n\\n`: `response.created`,
`response.in_progress`, `response.output_item.added`, `response.content_part.added`,
`response.output_text.delta` x N, `response.output_text.done`, `response.content_part.done`,
`response.output_item.done`, `response.completed` (with the usage and its cost); then the
connection ends, with no `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from starlette.types import Send

from service.simulator import faults
from service.simulator.model import answer_words, model_error, word_json
from service.simulator.state import State
from service.simulator.usage import Tokens, count_input
from service.simulator.wire import (
    Watch,
    end_stream,
    missing_field,
    send_event,
    send_json,
    start_stream,
    xai_error,
)

_MALFORMED = b"event: response.output_text.delta\ndata: {not json\n\n"
_DELTA = "response.output_text.delta"


async def create(body: Any, state: State, watch: Watch, send: Send) -> None:
    if not isinstance(body, dict):
        await xai_error(send, 400, "Failed to parse the request body as JSON")
        return
    if error := missing_field(body, model=str, input=(str, list)) or _bad_optional(body):
        await xai_error(send, 422, error)
        return
    if error := model_error(body["model"]):
        await xai_error(send, 404, error)
        return
    previous_id = body.get("previous_response_id")
    previous = state.responses.get(previous_id) if previous_id is not None else None
    if previous_id is not None and previous is None:
        await xai_error(send, 404, f"Response with id '{previous_id}' not found")
        return
    options = faults.options_for(body, state)
    if await faults.before_answer(options, state, watch, send):
        return
    answer = _Answer(body, previous, options, state)
    if body.get("stream") is not True:
        if not await faults.before_whole_answer(options, state, watch, send):
            await send_json(send, 200, answer.finish(state))
        return
    state.stream_started()
    completed = False
    try:
        completed = await _stream(answer, state, options, watch, send)
    finally:
        state.stream_ended(watch, completed)


async def retrieve(response_id: str, state: State, send: Send) -> None:
    response = state.responses.get(response_id)
    if response is None:
        await xai_error(send, 404, f"Response with id '{response_id}' not found")
        return
    await send_json(send, 200, response)


async def delete(response_id: str, state: State, send: Send) -> None:
    if not state.responses.delete(response_id):
        await xai_error(send, 404, f"Response with id '{response_id}' not found")
        return
    await send_json(send, 200, {"id": response_id, "object": "response", "deleted": True})


class _Answer:
    """One response in the making: its ids, words and usage, and the object at each stage."""

    def __init__(
        self,
        body: dict[str, Any],
        previous: dict[str, Any] | None,
        options: faults.Options,
        state: State,
    ) -> None:
        hex_id = uuid.uuid4().hex
        self.id, self.item_id = f"resp_{hex_id}", f"msg_{hex_id}"
        self.model: str = body["model"]
        self.created = int(time.time())
        self.previous_id: str | None = body.get("previous_response_id")
        self.store: bool = body.get("store") is not False
        self.words = answer_words(options.chunks)
        self.text = " ".join(self.words)
        history = previous["usage"]["total_tokens"] if previous is not None else 0
        prompt, image = count_input(body["input"])
        instructions, _ = count_input(body.get("instructions") or "")
        cached = history if options.cached_tokens is None else options.cached_tokens
        reasoning = options.reasoning_tokens
        text = history + prompt + instructions
        self.tokens = Tokens.of(self.model, text, image, len(self.words), cached, reasoning)
        self.xai = not state.config.openai_shapes

    def response(self, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "model": self.model,
            "status": status,
            "output": output,
            "usage": usage,
            "previous_response_id": self.previous_id,
            "store": self.store,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "text": {"format": {"type": "text"}},
            "reasoning": {"effort": None, "summary": None},
            "temperature": None,
            "top_p": None,
            "max_output_tokens": None,
            "user": None,
            "incomplete_details": None,
            "metadata": {},
        }

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def item(self, status: str, content: list[Any]) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def finish(self, state: State) -> dict[str, Any]:
        """The completed response, stored if it asked to be."""
        output = [self.item("completed", [self.part(self.text)])]
        done = self.response("completed", output, self.tokens.responses(self.xai))
        if self.store:
            state.responses.put(done)
        return done


async def _stream(
    answer: _Answer, state: State, options: faults.Options, watch: Watch, send: Send
) -> bool:
    """Send the events; True if the stream reached `response.completed`."""
    seq = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        data = json.dumps({"type": kind, "sequence_number": seq, **fields}, separators=(",", ":"))
        seq += 1
        return f"event: {kind}\ndata: {data}\n\n".encode()

    pending = answer.response("in_progress", [], None)
    position = {"item_id": answer.item_id, "output_index": 0, "content_index": 0}
    await start_stream(send)
    await send_event(
        send,
        event("response.created", response=pending)
        + event("response.in_progress", response=pending)
        + event("response.output_item.added", output_index=0, item=answer.item("in_progress", []))
        + event("response.content_part.added", **position, part=answer.part("")),
    )
    head = f'event: {_DELTA}\ndata: {{"type":"{_DELTA}","sequence_number":'.encode()
    middle = f',"item_id":"{answer.item_id}","output_index":0,"content_index":0,"delta":'.encode()
    last = len(answer.words) - 1
    for index, word in enumerate(answer.words):
        if faults.fault_due(options, index) and await faults.mid_stream(
            options, watch, send, _MALFORMED
        ):
            return False
        delta = word_json(word, index == last)
        await send_event(send, b"".join((head, b"%d" % seq, middle, delta, b',"logprobs":[]}\n\n')))
        seq += 1
        if options.delay_ms and await watch.sleep(options.delay_ms):
            return False
    done = answer.finish(state)
    await end_stream(
        send,
        event("response.output_text.done", **position, text=answer.text, logprobs=[])
        + event("response.content_part.done", **position, part=answer.part(answer.text))
        + event("response.output_item.done", output_index=0, item=done["output"][0])
        + event("response.completed", response=done),
    )
    return True


def _bad_optional(body: dict[str, Any]) -> str | None:
    """xAI's 422 message for an optional field of the wrong type."""
    for name, kind in (("instructions", str), ("previous_response_id", str), ("store", bool)):
        if body.get(name) is not None and not isinstance(body[name], kind):
            return (
                "Failed to deserialize the JSON body into the target type: "
                f"{name}: invalid type, expected {kind.__name__}"
            )
    return None
