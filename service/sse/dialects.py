"""What differs between the two kinds of SSE stream the relay carries.

`ChatDialect`: chat.completion.chunk events (`data: {...}`) ending in `data: [DONE]`, the seed
document's error event. `ResponsesDialect`: Responses API events (`event: response.*` +
`data: {...}`) ending in `response.completed`, `.failed` or `.incomplete`, the Responses error
event. Each says how the end is recognised, where usage sits, and what the error looks like.

Usage costs no JSON per chunk: xAI puts the running `usage` on every chunk, so a dialect only
remembers where the last one was and parses that one value when the stream ends (the last
total counts, never a sum); the chat dialect cuts it out of each chunk as bytes.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Protocol

from service.http import json_codec
from service.http.errors import sse_error_event
from service.sse.usage_cut import cut_usage
from service.usage.record import Usage, parse_usage

log = logging.getLogger("service.sse")

DONE = b"data: [DONE]\n\n"
_USAGE_KEY = b'"usage"'
_JSON_SPACE = b" \t\n\r"
_DECODER = json.JSONDecoder()
# A chat chunk with no choices, in any JSON spacing: the usage-only chunk (when it is the last
# event before [DONE] and carries a non-null usage).
_EMPTY_CHOICES = re.compile(rb'"choices"[ \t\r\n]*:[ \t\r\n]*\[[ \t\r\n]*\]')
_CHOICES = b'"choices":'
# A top-level string member of a chunk, as xAI writes it (compact, no escapes in ids or names).
_STRING_MEMBER = {
    name: re.compile(rb'[{,]"%s":"([A-Za-z0-9._:/-]{1,256})"' % name.encode())
    for name in ("id", "model")
}
_USAGE_OBJECT = b":{"
_CHUNK_HEAD = ("id", "object", "created", "model", "system_fingerprint")


class Dialect(Protocol):
    """What differs between two kinds of SSE stream; one instance per stream (it keeps state)."""

    fast_prefix: bytes  # an event starting with it and ending in `}` is well-formed
    fast_event: bytes  # a regular expression: one such event, whole, in its usual lines
    fast_lines: int  # how many lines such an event has (1: `data: {...}` alone)
    terminals: tuple[bytes, ...]  # an event starting with one of these ends the stream
    response_id: str | None

    def relayed(self, out: bytes) -> bytes:
        """See a batch of complete, checked events before it is sent; return what to send."""
        ...

    def usage(self) -> Usage | None:
        """The usage the upstream reported last, or None."""
        ...

    def error_event(self, message: str) -> bytes:
        """The event that ends a stream after a failure."""
        ...

    def identity(self) -> tuple[Any, Any]:
        """The answer's id and model, as the upstream named them (parsed once, after the
        stream, for tracing only)."""
        ...


def _last_usage(out: bytes, start: int, end: int) -> int:
    """Where the last `"usage"` key with a value other than null sits in out[start:end], or -1
    (a string "usage" is no key: no ':' follows it)."""
    pos = end
    while True:
        pos = out.rfind(_USAGE_KEY, start, pos)
        if pos < 0:
            return -1
        if out.startswith(_USAGE_OBJECT, pos + len(_USAGE_KEY)):  # compact JSON: every xAI chunk
            return pos
        rest = out[pos + len(_USAGE_KEY) : pos + len(_USAGE_KEY) + 16].lstrip(_JSON_SPACE)
        if rest.startswith(b":") and not rest[1:].lstrip(_JSON_SPACE).startswith(b"null"):
            return pos


def _empty_choices(out: bytes, start: int, end: int) -> bool:
    """Whether out[start:end] holds `"choices": []`, in any JSON spacing.

    A chunk whose first "choices" key, compact, opens a choice has choices: every xAI chunk
    but the usage-only one (a chunk's keys before "choices" hold no objects).
    """
    at = out.find(_CHOICES, start, end)
    if at >= 0 and out.startswith(b"[{", at + len(_CHOICES)):
        return False
    return _EMPTY_CHOICES.search(out, start, end) is not None


def _event_start(out: bytes, before: int) -> int:
    """Where the event that ends at `before` (its blank line excluded) starts: after the last
    blank line before it. One-byte searches (memrchr), not a two-byte one, which Python runs
    far slower: most events are one line, found in one step."""
    at = out.rfind(b"\n", 0, before)
    while at > 0:
        if out[at - 1] == 0x0A:
            return at + 1
        at = out.rfind(b"\n", 0, at)
    return 0


class _UsageTracker:
    """Remembers where the last event with a non-null `usage` sits; parses it only at the end."""

    __slots__ = ("_batch", "_pos")

    def __init__(self) -> None:
        self._batch: bytes = b""
        self._pos = -1

    def see(self, out: bytes) -> bool:
        """Note the last usage in `out`; whether `out` has one."""
        pos = _last_usage(out, 0, len(out))
        if pos >= 0:
            self._batch, self._pos = out, pos
        return pos >= 0

    def value(self) -> Any:
        """The remembered `usage` value, parsed on its own, or None if none was seen.

        Not its whole event: a Responses API terminal event carries the whole response, its
        output included. Raises ValueError if the value does not parse alone (a `data:` field
        split over several lines, broken JSON): `document()` then reads the whole event.
        """
        if self._pos < 0:
            return None
        batch, pos = self._batch, self._pos
        end = batch.find(b"\n\n", pos)
        text = batch[pos + len(_USAGE_KEY) : end if end >= 0 else len(batch)].decode()
        rest = text[text.index(":") + 1 :]
        return _DECODER.raw_decode(rest, len(rest) - len(rest.lstrip()))[0]

    def head(self, size: int = 512) -> bytes:
        """The first `size` bytes of the remembered event (b"" if none): where a chunk names
        its id and model."""
        if self._pos < 0:
            return b""
        start = _event_start(self._batch, self._pos)
        return self._batch[start : min(start + size, self._pos)]

    def document(self) -> dict[str, Any] | None:
        """The JSON data of the remembered event (None if there is none, or it is malformed)."""
        if self._pos < 0:
            return None
        batch, pos = self._batch, self._pos
        end = batch.find(b"\n\n", pos)
        doc = event_data(batch[_event_start(batch, pos) : end if end >= 0 else len(batch)])
        if doc is None:
            log.warning("the upstream's last usage is not a JSON object; charging an estimate")
        return doc


class ChatDialect:
    """Chat Completions: `data: {chunk}` events, then `data: [DONE]`; the seed's error event.

    Default (OpenAI's contract): the `usage` member is cut out of every chunk (`usage_cut`),
    the upstream's trailing usage-only chunk (`"choices": []`, right before [DONE]) is taken
    out, and when the client asked for usage it goes back in, right before [DONE], carrying
    the last running total (built from the last usage-bearing chunk if the upstream sent none).
    `passthrough`: every chunk passes byte for byte, `usage` or not; only the trailing
    usage-only chunk the gateway asked for on the client's behalf is dropped.
    """

    fast_prefix = b"data: {"
    fast_event = rb"data: \{[^\n]*\}\n\n"
    fast_lines = 1
    terminals = (b"data: [DONE]",)

    def __init__(self, client_wants_usage: bool, *, passthrough: bool = False) -> None:
        self.client_wants_usage = client_wants_usage
        self.passthrough = passthrough
        self.drop_usage_chunk = not client_wants_usage or not passthrough
        self.response_id: str | None = None
        self._usage = _UsageTracker()
        self._held: bytes | None = None  # a usage-only chunk that ended a batch: [DONE] next?
        self._trailer: bytes | None = None  # the upstream's trailing usage-only chunk

    def relayed(self, out: bytes) -> bytes:
        has_usage = self._usage.see(out)
        if not self.drop_usage_chunk:
            return out
        if self._held is not None:
            held, self._held = self._held, None
            if out.startswith(DONE):
                self._trailer = held
            else:
                out = held + out  # not the trailing one after all: relay it
                has_usage = True
        if has_usage:
            out = self._without_usage_chunk(out)
            if not self.passthrough:
                out = cut_usage(out)
        if self.client_wants_usage and out.endswith(DONE):
            out = out[: -len(DONE)] + self._final_usage_chunk() + DONE
        return out

    def _without_usage_chunk(self, out: bytes) -> bytes:
        """`out` without a trailing usage-only chunk (held if the batch ends with it)."""
        # The chunk to drop is the last event before [DONE] (which ends a batch when it is in
        # it): only that one event is looked at.
        end = len(out) - len(DONE) if out.endswith(DONE) else len(out)
        if end == 0:
            return out
        start = _event_start(out, end - 2)
        if not _empty_choices(out, start, end) or _last_usage(out, start, end) < 0:
            return out
        if end == len(out):
            self._held = out[start:]  # the batch ends here: is [DONE] next?
        else:
            self._trailer = out[start:end]
        return out[:start] + out[end:]

    def _final_usage_chunk(self) -> bytes:
        """The usage-only chunk for a client that asked: the upstream's own, or one built once
        from the last chunk that carried usage (one parse per stream); empty if none did."""
        if self._trailer is not None:
            return self._trailer
        doc = self._usage.document()
        if doc is None or not isinstance(doc.get("usage"), dict):
            return b""
        chunk = {k: doc[k] for k in _CHUNK_HEAD if k in doc}
        chunk["choices"] = []
        chunk["usage"] = doc["usage"]
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def usage(self) -> Usage | None:
        try:
            return parse_usage(self._usage.value())
        except ValueError:  # UnicodeDecodeError included
            doc = self._usage.document()
            return parse_usage(doc.get("usage")) if doc is not None else None

    def error_event(self, message: str) -> bytes:
        return sse_error_event(message)

    def identity(self) -> tuple[Any, Any]:
        # The last chunk with usage names both, before its usage: looked up, not parsed whole.
        head = self._usage.head()
        found = [_STRING_MEMBER[name].search(head) for name in ("id", "model")]
        return tuple(m.group(1).decode("utf-8", "replace") if m else None for m in found)


class ResponsesDialect:
    """Responses API: `event: response.*` events relayed untouched, ending in
    `response.completed` (usage in its `response.usage`), `response.failed` or
    `response.incomplete`. The id comes from `response.created`."""

    fast_prefix = b"event: "
    fast_event = rb"event: [^\n]*\ndata: \{[^\n]*\}\n\n"
    fast_lines = 2
    terminals = (
        b"event: response.completed\n",
        b"event: response.failed\n",
        b"event: response.incomplete\n",
    )
    _CREATED = b"event: response.created\n"

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.response_model: Any = None  # as `response.created` names it
        self._usage = _UsageTracker()

    def relayed(self, out: bytes) -> bytes:
        self._usage.see(out)
        if self.response_id is None and self._CREATED in out:
            self.response_id = self._created_id(out)
        return out

    def _created_id(self, out: bytes) -> str | None:
        start = out.find(self._CREATED)
        end = out.find(b"\n\n", start)
        doc = event_data(out[start:end])
        response = doc.get("response") if doc is not None else None
        if not isinstance(response, dict):
            return None
        self.response_model = response.get("model")
        response_id = response.get("id")
        return response_id if isinstance(response_id, str) and response_id else None

    def identity(self) -> tuple[Any, Any]:
        return self.response_id, self.response_model

    def usage(self) -> Usage | None:
        try:  # the last `usage` key: `response.usage` in the terminal event
            return parse_usage(self._usage.value())
        except ValueError:
            pass
        doc = self._usage.document()
        if doc is None:
            return None
        response = doc.get("response")
        if isinstance(response, dict) and isinstance(response.get("usage"), dict):
            return parse_usage(response["usage"])
        return parse_usage(doc.get("usage"))

    def final_response(self) -> dict[str, Any] | None:
        """The response its terminal event carries (parsed once, after the stream)."""
        doc = self._usage.document()
        response = doc.get("response") if doc is not None else None
        return response if isinstance(response, dict) else None

    def error_event(self, message: str) -> bytes:
        payload = {
            "type": "error",
            "code": "upstream_error",
            "message": f"API error: {message}",
            "param": None,
        }
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"


def event_data(event: bytes) -> dict[str, Any] | None:
    """The JSON object in an event's `data:` lines, or None."""
    lines = [
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    try:
        doc = json_codec.loads(b"\n".join(lines))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


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
