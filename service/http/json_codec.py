"""JSON on the request's path: orjson where it gives what the standard library would, the
standard library where it would not.

A stream parses its request body once and encodes its upstream body and its access-log line
once each, and orjson does that in a fraction of `json`'s time (docs/performance.md). It
differs at the edges, and there the standard library answers instead:
- it reads integers past 64 bits as floats (a `seed` would lose digits): a body with a run
  of 19 digits or more is parsed by `json`, exactly;
- it refuses what `json` takes (lone surrogates, integers past 64 bits) when encoding: such a
  value is encoded by `json`;
- it writes UTF-8 where `json` writes `\\u` escapes: log lines that would not be ASCII are
  written by `json`, so a log stream of any encoding takes them.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_COMPACT = json.JSONEncoder(separators=(",", ":"))
_LOG_LINE = json.JSONEncoder(separators=(",", ":"), default=str)
# Digits become b"1", every other byte b"0": a run of 19 digits is then a plain substring
# search, which a large body (an image as a data URI) passes through far faster than a regex.
_DIGITS_AS_ONES = bytes(0x31 if 0x30 <= byte <= 0x39 else 0x30 for byte in range(256))
_LONG_RUN = b"1" * 19


def loads_exact(raw: bytes) -> Any:
    """`raw` parsed, if orjson parses it exactly (raises orjson.JSONDecodeError, a ValueError,
    for anything it refuses or might read inexactly: the caller's own parser decides those)."""
    if _LONG_RUN in raw.translate(_DIGITS_AS_ONES):
        raise orjson.JSONDecodeError("a long run of digits: left to the exact parser", "", 0)
    return orjson.loads(raw)


def loads(raw: bytes) -> Any:
    """`raw` parsed exactly: by orjson where it can, else by `json` (ValueError if neither)."""
    try:
        return loads_exact(raw)
    except ValueError:
        return json.loads(raw)


def dumps_compact(value: Any) -> bytes:
    """Compact JSON bytes (UTF-8, no spaces) of a parsed JSON value."""
    try:
        return orjson.dumps(value)
    except TypeError:  # a lone surrogate or an integer past 64 bits, which `json` takes
        return _COMPACT.encode(value).encode()


def dumps_log_line(value: dict[str, Any]) -> str:
    """A log line's JSON object, ASCII only (others shown as their `str`)."""
    try:
        line = orjson.dumps(value, default=str)
    except TypeError:
        return _LOG_LINE.encode(value)
    return line.decode() if line.isascii() else _LOG_LINE.encode(value)
