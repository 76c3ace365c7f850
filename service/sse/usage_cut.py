"""Cut the top-level `usage` member out of chat chunks, byte for byte, without parsing them.

xAI puts the running usage on every chunk; OpenAI's contract has none on content chunks, and
clients that add usage up over chunks count it many times. `cut_usage` removes each chunk's
top-level `"usage": value` member (and one comma next to it) and leaves every other byte as it
came. xAI's compact chunks (a usage object of numbers, then only scalar members to the event's
end) are cut by one regular expression over the whole batch, in C. Any other `"usage"` member
is found with a bytes search and measured (its value, and the bytes after it to the chunk's
end, to tell a top-level member from a nested one): no JSON parse either way.

The input is a batch of complete `data: {...}` events. A `"usage"` that is not a key of the
chunk's top-level object (a nested one, one split over several `data:` lines, malformed JSON)
is left as it is.
"""

from __future__ import annotations

import re

_KEY = b'"usage"'
_SPACE = b" \t\r"
_SPACE_CODES = frozenset(_SPACE)
_COLON, _COMMA, _OPEN_BRACE, _OPEN_BRACKET = 0x3A, 0x2C, 0x7B, 0x5B
# Every byte but quotes, backslashes, braces and brackets: deleted to see a value's skeleton.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"\\{}[]')
# The precise path, for any other bytes: strings (escapes included), and structural bytes.
_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\[^\n])*"|[{}\[\]]')
_SCALAR = re.compile(rb'"(?:[^"\\\n]|\\[^\n])*"|[-+0-9.eE]+|true|false|null')

# xAI's shape: `,"usage":{...}` of numbers (and objects of numbers), followed to the event's end
# by scalar members only. Exactly one `}` closes what follows the value, so the member is one
# of the top-level object's; a `"usage":` cannot start inside a string, where quotes are escaped.
_NAME = rb'"[A-Za-z0-9_]{1,64}":'
_NUMBER = rb"(?:-?[0-9][0-9.eE+-]*|null)"
_NUMBERS = rb"\{(?:%s%s(?:,%s%s)*)?\}" % (_NAME, _NUMBER, _NAME, _NUMBER)
_ENTRY = rb"%s(?:%s|%s)" % (_NAME, _NUMBER, _NUMBERS)
_TAIL = rb',%s(?:"[^"\\{}\[\]\n]*"|%s|true|false)' % (_NAME, _NUMBER)
_COMPACT_USAGE = re.compile(
    rb',"usage":\{(?:%s(?:,%s)*)?\}(?=(?:%s)*\}\n\n)' % (_ENTRY, _ENTRY, _TAIL)
)


def cut_usage(out: bytes) -> bytes:
    """`out` with the top-level `usage` member removed from every event that has one."""
    out = _COMPACT_USAGE.sub(b"", out)
    if _KEY not in out:
        return out
    pieces: list[bytes] = []
    kept = 0  # out[kept:] is not yet in `pieces`
    pos = out.find(_KEY)
    while pos >= 0:
        span = _member(out, pos)
        if span is None or span[1] <= pos:  # (no cut ends before its key: a guard, not a case)
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
    colon = key + len(_KEY)
    if out[colon : colon + 2] == b":{":  # compact JSON, a usage object: every xAI chunk
        value = colon + 1
    else:
        colon = _skip_space(out, colon)
        if colon >= len(out) or out[colon] != _COLON:
            return None  # a string "usage", not a key
        value = _skip_space(out, colon + 1)
    line_end = out.find(b"\n", value)
    if line_end < 0:
        line_end = len(out)
    elif out[line_end + 1 : line_end + 2] != b"\n":
        return None  # not the event's last line: where its JSON ends is not known here
    value_end = _value_end(out, value, line_end)
    if value_end is None:
        return None
    if key > 0 and out[key - 1] == _COMMA:  # compact JSON: every xAI chunk
        return key - 1, value_end
    before = _skip_space_back(out, key)
    if before > 0 and out[before - 1] == _COMMA:
        return before - 1, value_end  # `,"usage":{...}`: the comma before goes with it
    if before == 0 or out[before - 1] != _OPEN_BRACE:
        return None
    after = _skip_space(out, value_end)
    if after < len(out) and out[after] == _COMMA:
        return key, _skip_space(out, after + 1)  # the first member: the comma after goes
    return key, value_end  # the only member


def _value_end(out: bytes, start: int, limit: int) -> int | None:
    """Where the member's value starting at `start` ends, or None unless the bytes after it
    (to `limit`, the end of the line) close exactly one object, the event's JSON: for valid
    JSON, so is the member one of the top-level object's.

    Fast path: the skeleton of the rest of the line (one `translate`) holds every brace and
    bracket outside strings, in order; the value's end is where its own braces balance."""
    rest = out[start:limit]
    if rest[-1:] != b"}" and not rest.rstrip(_SPACE).endswith(b"}"):
        return None
    skeleton = _skeleton(rest)
    if skeleton is None:
        return _scanned_end(out, start, limit)
    if rest[0] in (_OPEN_BRACE, _OPEN_BRACKET):
        depth = size = 0
        for byte in skeleton:
            size += 1
            depth += 1 if byte in (_OPEN_BRACE, _OPEN_BRACKET) else -1
            if depth == 0:
                break
        if depth:
            return None
        tail = skeleton[size:]
        if tail == b"}" and rest[0] == _OPEN_BRACE and rest[-1] == 0x7D:
            # Every xAI chunk: no brace or bracket outside or inside strings after the value
            # but the object's own `}`, so the value's last byte is the `}` before that one.
            return out.rfind(b"}", start, limit - 1) + 1
        closer = skeleton[size - 1 : size]
        # The value's last byte is the k-th such closer from its start (no string holds one).
        end = start
        for _ in range(skeleton.count(closer, 0, size)):
            end = out.find(closer, end, limit) + 1
    else:
        match = _SCALAR.match(out, start, limit)
        if match is None:
            return None
        end, tail = match.end(), skeleton
    opens = tail.count(b"{") + tail.count(b"[")
    return end if len(tail) - 2 * opens == 1 else None  # one closing byte more than opening


def _skeleton(text: bytes) -> bytes | None:
    """The braces and brackets of `text` outside its strings, or None when a string holds a
    structural byte or an escape (then only reading token by token can tell).

    With the other bytes deleted, a string without such bytes leaves `""`; removing those
    pairs left to right leaves a quote whenever a string left anything else."""
    residue = text.translate(None, _NOT_STRUCTURE)
    if b"\\" in residue:
        return None
    skeleton = residue.replace(b'""', b"")
    return None if b'"' in skeleton else skeleton


def _scanned_end(out: bytes, start: int, limit: int) -> int | None:
    """`_value_end` token by token: strings read whole, escapes and all."""
    depth, end = 0, None
    if out[start] not in (_OPEN_BRACE, _OPEN_BRACKET):
        match = _SCALAR.match(out, start, limit)
        if match is None:
            return None
        end = match.end()
    for token in _TOKEN.finditer(out, end or start, limit):
        byte = token.group()
        if byte in (b"{", b"["):
            depth += 1
        elif byte in (b"}", b"]"):
            depth -= 1
            if end is None and depth == 0:
                end, depth = token.end(), 0
                continue
            if end is not None and depth < 0:
                # The first unmatched closing byte after the value must end the line's JSON.
                return end if out[token.end() : limit].strip(_SPACE) == b"" else None
    return None


def _skip_space(out: bytes, pos: int) -> int:
    end = len(out)
    while pos < end and out[pos] in _SPACE_CODES:  # compact JSON (every xAI chunk): no step
        pos += 1
    return pos


def _skip_space_back(out: bytes, pos: int) -> int:
    while pos > 0 and out[pos - 1] in _SPACE_CODES:
        pos -= 1
    return pos
