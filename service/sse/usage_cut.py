"""Cut the top-level `usage` member out of chat chunks, byte for byte, without parsing them.

xAI puts the running usage on every chunk; OpenAI's contract has none on content chunks, and
clients that add usage up over chunks count it many times. `cut_usage` removes each chunk's
top-level `"usage": value` member (and one comma next to it) and leaves every other byte as it
came. It finds the member with a bytes search and measures only that member's value, and the
bytes after it to the chunk's end (to tell a top-level member from a nested one): for xAI's
compact chunks a handful of C-speed searches and counts, no JSON parse.

The input is a batch of complete `data: {...}` events. A `"usage"` that is not a key of the
chunk's top-level object (a nested one, one split over several `data:` lines, malformed JSON)
is left as it is.
"""

from __future__ import annotations

import re

_KEY = b'"usage"'
_SPACE = b" \t\r"
_SPACES = (b" ", b"\t", b"\r")
_EVENT_END = b"\n"
# A run of bytes whose strings hold no brace, bracket, quote escape or line end: in it, braces
# and brackets can be counted without reading strings (every xAI usage object is one).
_PLAIN = re.compile(rb'(?:[^"\n]++|"[^"\\{}\[\]\n]*+")*+')
# The precise path, for any other bytes: strings (escapes included), and structural bytes.
_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\[^\n])*"|[{}\[\]]')
_COUNTED_LEVELS = 4  # deeper values are measured token by token
_SCALAR = re.compile(rb'"(?:[^"\\\n]|\\[^\n])*"|[-+0-9.eE]+|true|false|null')


def cut_usage(out: bytes) -> bytes:
    """`out` with the top-level `usage` member removed from every event that has one."""
    pieces: list[bytes] = []
    kept = 0  # out[kept:] is not yet in `pieces`
    pos = out.find(_KEY)
    while pos >= 0:
        span = _member(out, pos)
        if span is None:
            pos = out.find(_KEY, pos + len(_KEY))
            continue
        start, end = span
        pieces.append(out[kept:start])
        kept = end
        pos = out.find(_KEY, end)
    if not pieces:
        return out
    pieces.append(out[kept:])
    return b"".join(pieces)


def _member(out: bytes, key: int) -> tuple[int, int] | None:
    """The span to cut for the `"usage"` at `key` (the member and one comma), or None when it
    is no top-level member of its event's object."""
    colon = _skip_space(out, key + len(_KEY))
    if not out.startswith(b":", colon):
        return None  # a string "usage", not a key
    value = _skip_space(out, colon + 1)
    line_end = out.find(_EVENT_END, value)
    if line_end < 0:
        line_end = len(out)
    elif not out.startswith(b"\n\n", line_end):
        return None  # not the event's last line: where its JSON ends is not known here
    value_end = _value_end(out, value, line_end)
    if value_end is None or not _closes_top_level(out, value_end, line_end):
        return None
    before = _skip_space_back(out, key)
    if out[before - 1 : before] == b",":
        return before - 1, value_end  # `,"usage":{...}`: the comma before goes with it
    if out[before - 1 : before] != b"{":
        return None
    after = _skip_space(out, value_end)
    if out.startswith(b",", after):
        return key, _skip_space(out, after + 1)  # the first member: the comma after goes
    return key, value_end  # the only member


def _value_end(out: bytes, start: int, limit: int) -> int | None:
    """Where the JSON value starting at `start` ends (within the line), or None."""
    first = out[start : start + 1]
    if first == b"{" or first == b"[":
        return _container_end(out, start, limit)
    match = _SCALAR.match(out, start, limit)
    return match.end() if match is not None else None


def _container_end(out: bytes, start: int, limit: int) -> int | None:
    """The end of the object or array at `start`: closing bytes found by search, opening ones
    counted, when no string in between holds a structural byte (a usage object nests two
    levels); else token by token."""
    opener, closer = out[start : start + 1], b"}" if out[start] == 0x7B else b"]"
    close = start
    for _ in range(_COUNTED_LEVELS):
        close = out.find(closer, close + 1, limit)
        if close < 0:
            break
        if out.count(opener, start, close) == out.count(closer, start, close + 1):
            end = close + 1
            if _PLAIN.fullmatch(out, start, end) is not None and _balanced_other(out, start, end):
                return end
            break
    return _scan_end(out, start, limit)


def _balanced_other(out: bytes, start: int, end: int) -> bool:
    """Brackets inside an object (braces inside an array) balance too."""
    if out[start] == 0x7B:
        return out.count(b"[", start, end) == out.count(b"]", start, end)
    return out.count(b"{", start, end) == out.count(b"}", start, end)


def _scan_end(out: bytes, start: int, limit: int) -> int | None:
    depth = 0
    for token in _TOKEN.finditer(out, start, limit):
        byte = token.group()
        if byte in (b"{", b"["):
            depth += 1
        elif byte in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                return token.end()
    return None


def _closes_top_level(out: bytes, start: int, limit: int) -> bool:
    """Whether the bytes after a member close exactly one object, ending the event's JSON:
    for valid JSON, so is the member one of the top-level object's."""
    tail = out[start:limit].rstrip(_SPACE)
    if not tail.endswith(b"}"):
        return False
    if _PLAIN.fullmatch(tail) is not None:
        opens = tail.count(b"{") + tail.count(b"[")
        return tail.count(b"}") + tail.count(b"]") - opens == 1
    depth = 0
    for token in _TOKEN.finditer(tail):
        byte = token.group()
        if byte in (b"{", b"["):
            depth += 1
        elif byte in (b"}", b"]"):
            depth -= 1
    return depth == -1


def _skip_space(out: bytes, pos: int) -> int:
    while out[pos : pos + 1] in _SPACES:  # compact JSON (every xAI chunk): no step taken
        pos += 1
    return pos


def _skip_space_back(out: bytes, pos: int) -> int:
    while pos > 0 and out[pos - 1 : pos] in _SPACES:
        pos -= 1
    return pos
