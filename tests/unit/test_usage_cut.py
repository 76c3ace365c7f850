"""Usage the OpenAI way: the byte-level cut of a chunk's `usage` member, and what the chat
dialect sends by default (no usage on content chunks, one usage-only chunk when asked)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.sse import ChatDialect
from service.sse.usage_cut import cut_usage
from tests.support.hostile_upstream import openai_events, running_usage, xai_events
from tests.support.relaying import relayed

_KEYS = st.sampled_from(["usage", "a", "choices", "x y", "usage ", 'us"age', "}", "{"]) | st.text(
    max_size=8
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(['"usage":{', "}", "]", "\\", '"', ",", "usage"])
)
JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)
# Separators: compact (xAI), Python's default, and the odd spacings JSON allows on one line.
SEPARATORS = st.sampled_from(
    [(",", ":"), (", ", ": "), (" , ", " : "), ("\t,", ":\t"), (",  ", ":")]
)


@st.composite
def chunks_with_usage(draw: st.DrawFn) -> tuple[bytes, dict[str, Any], Any]:
    """(a `data: {...}` event with a top-level usage member anywhere, the object, its usage)."""
    members = draw(st.dictionaries(_KEYS.filter(lambda k: k != "usage"), JSON, max_size=5))
    usage = draw(JSON)
    items = list(members.items())
    items.insert(draw(st.integers(min_value=0, max_value=len(items))), ("usage", usage))
    item_sep, key_sep = draw(SEPARATORS)
    ascii_only = draw(st.booleans())
    body = item_sep.join(
        json.dumps(k, ensure_ascii=ascii_only)
        + key_sep
        + json.dumps(v, separators=(item_sep, key_sep), ensure_ascii=ascii_only)
        for k, v in items
    )
    pad = draw(st.sampled_from(["", " ", "\t "]))
    event = f"data: {{{pad}{body}{pad}}}\n\n".encode()
    return event, members, usage


def removed_spans(before: bytes, after: bytes) -> list[bytes]:
    """Every contiguous span whose removal turns `before` into `after`."""
    size = len(before) - len(after)
    return [
        before[head : head + size]
        for head in range(len(after) + 1)
        if before[:head] == after[:head] and before[head + size :] == after[head:]
    ]


def is_member_and_a_comma(span: bytes, usage: Any) -> bool:
    """Whether `span` is `"usage": value` with whitespace and at most one comma around it."""
    bare = span.strip(b" \t")
    for member in (bare, bare.removeprefix(b",").lstrip(b" \t"), bare.removesuffix(b",")):
        member = member.rstrip(b" \t")
        try:
            if json.loads(b"{" + member + b"}") == {"usage": usage}:
                return member.startswith(b'"usage"')
        except ValueError:
            continue
    return False


@settings(max_examples=200)
@given(chunks_with_usage())
def test_the_cut_equals_parsing_and_deleting_the_member(case):
    event, members, _ = case
    cut = cut_usage(event)
    assert cut.startswith(b"data: ") and cut.endswith(b"\n\n")
    assert json.loads(cut[6:-2]) == members


@settings(max_examples=200)
@given(chunks_with_usage())
def test_the_cut_removes_one_span_holding_the_member_and_a_comma_and_keeps_every_other_byte(case):
    event, _, usage = case
    spans = removed_spans(event, cut_usage(event))
    assert any(is_member_and_a_comma(span, usage) for span in spans), spans


@given(st.dictionaries(_KEYS.filter(lambda k: k != "usage"), JSON, max_size=5))
def test_a_chunk_without_a_top_level_usage_member_is_untouched(members):
    event = b"data: " + json.dumps(members).encode() + b"\n\n"
    assert cut_usage(event) == event


def test_every_chunk_of_a_batch_loses_its_usage_and_nothing_else():
    events = xai_events(5, usage_chunk=False)
    cut = cut_usage(b"".join(events))
    expected = []
    for event in events:
        doc = json.loads(event[6:-2]) if event.startswith(b"data: {") else None
        if doc is None:
            expected.append(event)
            continue
        del doc["usage"]
        expected.append(b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n")
    assert cut == b"".join(expected)


def test_a_nested_usage_member_stays():
    event = b'data: {"choices":[{"delta":{"usage":{"a":1}}}],"usage":{"total_tokens":3}}\n\n'
    assert cut_usage(event) == b'data: {"choices":[{"delta":{"usage":{"a":1}}}]}\n\n'


def test_a_usage_array_or_scalar_last_is_cut_whole():
    assert cut_usage(b'data: {"a":{},"usage":[1,{"b":2}]}\n\n') == b'data: {"a":{}}\n\n'
    assert cut_usage(b'data: {"a":{},"usage":null}\n\n') == b'data: {"a":{}}\n\n'


def test_a_usage_split_over_data_lines_is_left_as_it_came():
    event = b'data: {"choices": [], "usage": {"prompt_tokens": 3,\ndata: "x": 4}}\n\n'
    assert cut_usage(event) == event


# --- the chat dialect by default -------------------------------------------------------------


def chunks(sent: bytes) -> list[dict[str, Any]]:
    return [json.loads(e[6:]) for e in sent.split(b"\n\n") if e.startswith(b"data: {")]


def test_by_default_no_chunk_carries_usage_when_the_client_did_not_ask():
    sent = relayed(ChatDialect(client_wants_usage=False), [b"".join(xai_events(6))])
    assert b'"usage"' not in sent
    assert [c["choices"][0]["delta"]["content"] for c in chunks(sent)] == [
        f"word{i} " for i in range(6)
    ]
    assert sent.endswith(b"data: [DONE]\n\n")


def test_by_default_a_client_that_asked_gets_one_usage_only_chunk_with_the_last_total():
    for reads in ([b"".join(xai_events(6))], xai_events(6)):
        sent = relayed(ChatDialect(client_wants_usage=True), reads)
        with_usage = [c for c in chunks(sent) if "usage" in c]
        assert with_usage == [chunks(sent)[-1]]
        assert with_usage[0]["choices"] == [] and with_usage[0]["usage"] == running_usage(6)


def test_a_summing_client_counts_the_real_total():
    sent = relayed(ChatDialect(client_wants_usage=True), xai_events(21))
    summed = sum(c["usage"]["total_tokens"] for c in chunks(sent) if c.get("usage"))
    assert summed == running_usage(21)["total_tokens"]


def test_the_usage_only_chunk_is_built_from_the_last_total_when_the_upstream_sent_none():
    sent = relayed(ChatDialect(client_wants_usage=True), [b"".join(xai_events(4, False))])
    last = chunks(sent)[-1]
    assert last["choices"] == [] and last["usage"] == running_usage(4)
    assert (last["id"], last["object"]) == ("chatcmpl-hostile", "chat.completion.chunk")
    assert sum(1 for c in chunks(sent) if "usage" in c) == 1


def test_an_openai_shaped_upstream_reaches_the_client_as_it_came():
    events = openai_events(4)
    assert relayed(ChatDialect(client_wants_usage=True), [b"".join(events)]) == b"".join(events)


def test_the_charge_is_the_last_running_total():
    dialect = ChatDialect(client_wants_usage=False)
    relayed(dialect, xai_events(9))
    assert dialect.usage().total_tokens == running_usage(9)["total_tokens"]


# --- the one-expression path for xAI's shape ---------------------------------------------------

_NUMBERS = st.integers(min_value=0, max_value=10**9) | st.none()
_USAGE_OBJECTS = st.dictionaries(
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    _NUMBERS | st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), _NUMBERS),
    max_size=6,
)


@settings(max_examples=150)
@given(
    st.dictionaries(_KEYS.filter(lambda k: k != "usage"), JSON, max_size=4),
    _USAGE_OBJECTS,
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda k: k != "usage"),
        st.text(max_size=8) | _NUMBERS | st.booleans(),
        max_size=3,
    ),
)
def test_xai_shaped_chunks_lose_exactly_their_usage(head, usage, tail):
    """A usage object of numbers with scalar members after it, as xAI sends: the expression's
    case, which must agree with parsing and deleting whatever else the chunk holds."""
    doc = {**head, "usage": usage, **{k: v for k, v in tail.items() if k not in head}}
    event = b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
    del doc["usage"]
    assert json.loads(cut_usage(event)[6:-2]) == doc
