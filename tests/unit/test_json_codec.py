"""The request's JSON: orjson where it reads and writes what `json` would, `json` elsewhere."""

from __future__ import annotations

import json

import pytest

from service.http.errors import ApiError
from service.http.json_codec import dumps_compact, dumps_log_line, loads_exact
from service.middleware.body import parse_json_object

BIG = 123456789012345678901234567890  # past 64 bits: orjson would read a float


def test_a_body_with_an_integer_past_64_bits_keeps_every_digit_to_the_upstream():
    with pytest.raises(ValueError):
        loads_exact(b'{"seed": %d}' % BIG)  # left to the exact parser
    body = parse_json_object(b'{"model": "m", "seed": %d, "temperature": 0.7}' % BIG)
    assert body["seed"] == BIG
    assert json.loads(dumps_compact(body)) == {"model": "m", "seed": BIG, "temperature": 0.7}


def test_what_orjson_refuses_is_read_and_written_as_json_does():
    body = parse_json_object(b'{"content": "\\ud800 alone"}')  # a lone surrogate, escaped
    assert body == {"content": "\ud800 alone"}
    assert dumps_compact(body) == b'{"content":"\\ud800 alone"}'


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"a": NaN}', "NaN, which is not a JSON number"),
        (b'{"a": 1e999}', "too large to be finite"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b'{"a": 1,}', "could not parse the JSON body"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_refusals_name_what_is_wrong_as_before(raw, says):
    with pytest.raises(ApiError) as refused:
        parse_json_object(raw)
    assert refused.value.status == 400 and says in refused.value.message


def test_compact_bytes_parse_back_to_the_same_value():
    value = {"model": "grok-4", "messages": [{"role": "user", "content": "héllo ✓"}], "n": 1}
    assert json.loads(dumps_compact(value)) == value
    assert b" " not in dumps_compact({"a": [1, 2], "b": {"c": None}})


def test_log_lines_are_ascii_whatever_they_hold():
    line = dumps_log_line({"path": "/api/v1/ünïcode", "at": object, "ok": True, "n": None})
    assert line.isascii()
    assert json.loads(line)["path"] == "/api/v1/ünïcode" and json.loads(line)["ok"] is True
    assert dumps_log_line({"a": 1.5, "b": "x"}) == '{"a":1.5,"b":"x"}'
