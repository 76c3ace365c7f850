"""The relay's pure pieces: cutting reads into events, and what each dialect does with them."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from service.sse import ChatDialect, ResponsesDialect
from service.sse.dialects import _EMPTY_CHOICES, _empty_choices, _event_start
from service.sse.relay import Framer
from tests.support.hostile_upstream import RESPONSE_ID, responses_events, xai_events
from tests.support.relaying import relayed as relayed_by

CAP = 1024


def feed_all(framer: Framer, reads: list[bytes]) -> tuple[bytes, int, bool, str | None]:
    """Feed the reads in order; what would be sent, how many events, done, the cut reason."""
    sent, count = b"", 0
    for data in reads:
        out, events, done, problem = framer.feed(data)
        sent += out
        count += events
        if done or problem:
            return sent, count, done, problem
    return sent, count, False, None


def relayed(dialect, reads: list[bytes]) -> bytes:
    """What the client gets: the framer's events as the dialect passes them on."""
    return relayed_by(dialect, reads, CAP * 64)


# --- framing ------------------------------------------------------------------------------


# Events of every kind the two dialects meet, well-formed or not, terminal or not.
_EVENT_KINDS = [
    b'data: {"a":1}',
    b'data: {"choices":[],"usage":{"total_tokens":3}}',
    b"data: [DONE]",
    b"data: [DONE] and more",
    b"data: {not json",
    b'data: {"a":1} trailing',
    b": a comment",
    b"",
    b"\n",
    b'data: {"a":\n{"b":2}}',
    b'event: response.output_text.delta\ndata: {"delta":"x"}',
    b'event: response.completed\ndata: {"response":{"usage":{"total_tokens":3}}}',
    b'event: response.failed\ndata: {"response":{}}\nid: 9',
    b'event: response.created\ndata: {"response":{"id":"r"}}',
    b"event: response.in_progress",
    b"id: 7",
    b'retry: 10\ndata: {"a":1}',
    # Near misses of the fast shapes: a line too many or too few, a stray line end.
    b"event: a}",
    b'event: a\ndata: {"b":1}\ndata: {"c":2}',
    b'\nevent: a\ndata: {"b":1}',
    b'event: a\nbogus: {"b":1}',
    b'data: {"a":1}\n',
    b'event: response.completed\ndata: {"response":{}}\ndata: {"more":1}',
    b"data: [DONE]\ndata: {}",
    # Near misses of the counted chat shape: a terminal closing in `}`, an event that opens
    # the fast shape but does not close it, a closing brace alone.
    b"data: [DONE]}",
    b"data: {",
    b"}",
]


@settings(max_examples=1000)
@given(
    st.lists(st.sampled_from(_EVENT_KINDS), min_size=1, max_size=12),
    st.sampled_from([ChatDialect(True), ResponsesDialect()]),
    st.integers(min_value=0, max_value=40),
)
def test_a_batch_taken_whole_is_framed_as_event_by_event(events, dialect, cap):
    batch = b"".join(event + b"\n\n" for event in events)
    framer = Framer(dialect, cap * 10)  # small caps: some events are too large
    # A read that ends on a blank line is checked whole, the fast way where it can be.
    assert framer.feed(batch) == framer.check_each(batch)


def test_whole_streams_of_both_dialects_are_taken_as_one_batch():
    """The usual shapes take the fast way (the check above would hold trivially if it took
    none): a whole xAI stream through [DONE] is counted, a whole Responses stream matched."""
    chat = b"".join(xai_events(20))
    responses = b"".join(responses_events(6))
    counted = Framer(ChatDialect(True), CAP)._counted(chat)
    assert counted == (chat, chat.count(b"\n\n"), True, None)
    matched = Framer(ResponsesDialect(), CAP)._matched(responses)
    assert matched == (responses, responses.count(b"\n\n"), True, None)


def test_events_split_at_every_byte_come_out_whole():
    stream = b"".join(xai_events(3))
    reads = [stream[i : i + 1] for i in range(len(stream))]
    sent, count, done, problem = feed_all(Framer(ChatDialect(True), CAP), reads)
    assert sent == stream and count == 5 and done and problem is None


def test_crlf_line_ends_split_between_cr_and_lf_make_no_extra_blank_line():
    stream = b"".join(xai_events(2)).replace(b"\n", b"\r\n")
    cut = stream.index(b"\r\n\r\n") + 1  # the first read ends in CR, the next starts with LF
    sent, count, done, _ = feed_all(Framer(ChatDialect(True), CAP), [stream[:cut], stream[cut:]])
    assert sent == b"".join(xai_events(2)) and count == 4 and done


def test_cr_only_line_ends_are_events_too():
    stream = b"".join(xai_events(2)).replace(b"\n", b"\r")
    sent, count, done, _ = feed_all(Framer(ChatDialect(True), CAP), [stream])
    assert sent == b"".join(xai_events(2)) and count == 4 and done


def test_a_partial_event_is_not_held_past_the_cap():
    framer = Framer(ChatDialect(False), CAP)
    assert framer.feed(b'data: {"x":"' + b"a" * (CAP // 2))[3] is None
    out, _, done, problem = framer.feed(b"a" * CAP)
    assert out == b"" and not done
    assert problem == f"the upstream sent an event larger than {CAP} bytes"


def test_a_complete_event_over_the_cap_is_not_relayed_but_the_ones_before_it_are():
    good = xai_events(1, usage_chunk=False)[0]
    huge = b'data: {"x":"' + b"a" * CAP + b'"}\n\n'
    sent, count, done, problem = feed_all(Framer(ChatDialect(True), CAP), [good + huge + good])
    assert sent == good and count == 1 and not done
    assert "larger than" in problem


def test_a_malformed_event_cuts_the_stream_after_the_good_ones():
    good = xai_events(1, usage_chunk=False)[0]
    sent, _, done, problem = feed_all(
        Framer(ChatDialect(True), CAP), [good + b"data: {not json\n\n" + good]
    )
    assert sent == good and not done
    assert problem == "the upstream sent a malformed event"


def test_nothing_after_done_is_relayed():
    stream = b"".join(xai_events(1)) + b'data: {"late":true}\n\n'
    sent, _, done, _ = feed_all(Framer(ChatDialect(True), CAP), [stream])
    assert sent == b"".join(xai_events(1)) and done


def test_comments_and_other_sse_fields_are_well_formed():
    stream = b': ping\n\nevent: message\ndata: {"a": 1}\n\ndata:{}\n\nid: 7\n\n'
    sent, count, _, problem = feed_all(Framer(ChatDialect(True), CAP), [stream])
    assert sent == stream and count == 4 and problem is None


# --- chat: usage without a JSON round trip per chunk ---------------------------------------


def test_passthrough_relays_usage_bearing_chunks_byte_for_byte_without_the_trailing_one():
    events = xai_events(4)
    usage_chunk = events[-2]
    sent = relayed(ChatDialect(client_wants_usage=False, passthrough=True), [b"".join(events)])
    assert sent == b"".join(e for e in events if e is not usage_chunk)


def test_a_usage_chunk_ending_one_read_is_dropped_when_done_follows_in_the_next():
    events = xai_events(2)
    reads = [b"".join(events[:-1]), events[-1]]  # ... usage chunk | [DONE]
    sent = relayed(ChatDialect(client_wants_usage=False, passthrough=True), reads)
    assert sent == events[0] + events[1] + events[-1]


def test_a_usage_only_chunk_that_is_not_the_last_one_is_relayed():
    events = xai_events(2)
    usage_only, content = events[-2], events[0]
    dialect = ChatDialect(client_wants_usage=False, passthrough=True)
    sent = relayed(dialect, [usage_only, content + events[-1]])
    assert sent == usage_only + content + events[-1]


def test_passthrough_keeps_the_usage_chunk_when_the_client_asked_for_it():
    stream = b"".join(xai_events(3))
    assert relayed(ChatDialect(client_wants_usage=True, passthrough=True), [stream]) == stream


def test_usage_is_the_last_running_total_not_a_sum():
    dialect = ChatDialect(client_wants_usage=False)
    events = xai_events(6, usage_chunk=False)
    relayed(dialect, events)  # one read per event
    usage = dialect.usage()
    last = json.loads(events[-2][6:])["usage"]
    assert usage.total_tokens == last["total_tokens"] == 18
    assert usage.cost_ticks == last["cost_in_usd_ticks"]
    assert usage.cached_input_tokens == 4


def test_a_null_usage_after_a_real_one_does_not_hide_it():
    dialect = ChatDialect(client_wants_usage=True)
    relayed(
        dialect,
        [
            b'data: {"choices":[{"delta":{}}],"usage":{"total_tokens":5}}\n\n',
            b'data: {"choices":[{"delta":{"content":"usage"}}],"usage" : null}\n\n',
        ],
    )
    assert dialect.usage().total_tokens == 5


def test_the_word_usage_in_content_is_not_taken_for_usage():
    dialect = ChatDialect(client_wants_usage=True)
    relayed(dialect, [b'data: {"choices":[{"delta":{"content":"usage"}}]}\n\n'])
    assert dialect.usage() is None


# --- responses ----------------------------------------------------------------------------


def test_responses_events_pass_untouched_with_usage_from_completed_and_the_id_from_created():
    dialect = ResponsesDialect()
    stream = b"".join(responses_events(3))
    assert relayed(dialect, [stream[:100], stream[100:]]) == stream
    assert dialect.response_id == RESPONSE_ID
    usage = dialect.usage()
    # The Responses API counts reasoning inside output_tokens (3 of 3 here); Usage keeps it apart.
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (9, 0, 3)
    assert usage.cost_ticks == 777_000


def test_responses_stream_ends_at_response_completed():
    stream = b"".join(responses_events(1)) + b'event: late\ndata: {"x":1}\n\n'
    sent, _, done, _ = feed_all(Framer(ResponsesDialect(), CAP), [stream])
    assert done and sent == b"".join(responses_events(1))


def test_responses_error_event_is_the_responses_shape():
    event = ResponsesDialect().error_event("boom")
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    assert json.loads(event.split(b"data: ", 1)[1]) == {
        "type": "error",
        "code": "upstream_error",
        "message": "API error: boom",
        "param": None,
    }


def test_the_usage_of_a_large_terminal_event_is_read_from_its_usage_value_alone():
    output = [{"type": "message", "content": [{"type": "output_text", "text": "x" * 50_000}]}]
    usage = {"input_tokens": 9, "output_tokens": 5, "total_tokens": 14, "cost_in_usd_ticks": 7}
    completed = {"type": "response.completed", "response": {"output": output, "usage": usage}}
    dialect = ResponsesDialect()
    dialect.relayed(b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n")
    got = dialect.usage()
    assert (got.input_tokens, got.output_tokens, got.total_tokens, got.cost_ticks) == (9, 5, 14, 7)


def test_a_usage_split_over_data_lines_is_read_from_its_whole_event():
    # SSE lets one event's data span several `data:` lines, joined by newlines.
    event = (
        b'data: {"choices": [], "usage": {"prompt_tokens": 3,\ndata: "completion_tokens": 4}}\n\n'
    )
    dialect = ChatDialect(client_wants_usage=True)
    dialect.relayed(event)
    got = dialect.usage()
    assert (got.input_tokens, got.output_tokens, got.total_tokens) == (3, 4, 7)


def test_a_usage_that_is_no_json_counts_as_none():
    dialect = ChatDialect(client_wants_usage=True)
    dialect.relayed(b'data: {"choices": [], "usage": {"prompt_tokens": 3,,}}\n\n')
    assert dialect.usage() is None


@given(st.binary(max_size=16).map(lambda b: bytes(b"ab\n"[x % 3] for x in b)), st.data())
def test_an_event_start_found_by_line_ends_is_the_last_blank_line(data, draw):
    before = draw.draw(st.integers(min_value=0, max_value=len(data)))
    blank = data.rfind(b"\n\n", 0, before)
    assert _event_start(data, before) == (0 if blank < 0 else blank + 2)


def test_empty_choices_are_found_as_the_regular_expression_finds_them():
    events = xai_events(4) + xai_events(4, spaced=True)
    events += [b'data: {"choices": [ ],"usage":{"total_tokens":1}}', b'data: {"choices":[{}]}']
    for event in events:
        assert _empty_choices(event, 0, len(event)) == bool(_EMPTY_CHOICES.search(event)), event
    assert sum(_empty_choices(e, 0, len(e)) for e in events) == 3  # two usage chunks, one more
