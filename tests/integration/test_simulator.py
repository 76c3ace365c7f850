"""The simulator speaks xAI as it is today: usage and cost on every chunk, xAI's errors, the
key-status endpoint, image costs, the Responses API, and faults on every kind of answer.

Each test runs against a real simulator process of this module's own (reset before each test),
so blocking its key or filling its store never touches the gateway tests' simulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent

from tests.support.processes import Proc, running, start_simulator

KEY = "xai-sim-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
FAST = "grok-4-1-fast-non-reasoning"
REASONING = "grok-4-1-fast-reasoning"
PROMPT = [{"role": "user", "content": "one two three four five"}]  # 5 prompt tokens
# The documented price table in ticks per token (USD per million tokens x 10^4).
FAST_PRICE = {"input": 2_000, "cached_input": 500, "output": 5_000}
USAGE_FIELDS = {
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "num_sources_used",
    "cost_in_usd_ticks",
}
STREAM_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 4,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Proc]:
    with running(start_simulator()) as proc:
        yield proc


@pytest.fixture
def sim(shared_sim: Proc) -> Proc:
    httpx.post(f"{shared_sim.url}/sim/reset")
    return shared_sim


def post(sim: Proc, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{sim.url}{path}", json=body, headers=AUTH if headers is None else headers)


def chat(model: str = FAST, chunks: int = 4, stream: bool = False, **extra) -> dict:
    sim = extra.pop("sim", {})
    return {"model": model, "messages": PROMPT, "stream": stream, "sim": {"chunks": chunks, **sim}}


def data_events(raw: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[6:] for line in raw.split("\n") if line.startswith("data: ")]


def chunks_of(sim: Proc, body: dict) -> tuple[list[dict], str]:
    """A chat stream's chunks (JSON, without `[DONE]`) and its raw text."""
    raw = post(sim, "/v1/chat/completions", {**body, "stream": True}).text
    return [json.loads(d) for d in data_events(raw) if d != "[DONE]"], raw


def sdk(sim: Proc) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{sim.url}/v1", max_retries=0)


def stats(sim: Proc) -> dict:
    return httpx.get(f"{sim.url}/sim/stats").json()


def cost(price: dict, prompt: int, cached: int, output: int) -> int:
    uncached = prompt - cached
    return uncached * price["input"] + cached * price["cached_input"] + output * price["output"]


# --- chat, xAI's shape ----------------------------------------------------------------------


def test_every_chunk_carries_the_running_usage_and_fingerprint_unasked(sim):
    chunks, _ = chunks_of(sim, chat(chunks=5))
    assert len(chunks) == 5
    for done, chunk in enumerate(chunks, start=1):
        assert set(chunk["usage"]) == USAGE_FIELDS
        assert chunk["usage"]["completion_tokens"] == done
        assert chunk["system_fingerprint"].startswith("fp_")


def test_running_total_never_decreases_and_ends_at_the_non_streaming_total(sim):
    body = chat(model=REASONING, chunks=6, sim={"cached_tokens": 2})
    chunks, _ = chunks_of(sim, body)
    totals = [(c["usage"]["total_tokens"], c["usage"]["cost_in_usd_ticks"]) for c in chunks]
    assert totals == sorted(totals)
    whole = post(sim, "/v1/chat/completions", body).json()
    assert chunks[-1]["usage"] == whole["usage"]
    assert whole["system_fingerprint"] == chunks[-1]["system_fingerprint"]


@pytest.mark.parametrize(
    ("model", "ticks"),
    [
        (FAST, 3 * 2_000 + 2 * 500 + 4 * 5_000),  # 27,000 ticks = $0.0000027
        ("grok-4", 3 * 30_000 + 2 * 7_500 + 4 * 150_000),  # 705,000 ticks
    ],
)
def test_cost_ticks_follow_the_documented_price_table(sim, model, ticks):
    body = chat(model=model, chunks=4, sim={"cached_tokens": 2})  # 5 prompt tokens, 2 cached
    usage = post(sim, "/v1/chat/completions", body).json()["usage"]
    assert usage["prompt_tokens"] == 5
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2
    assert usage["cost_in_usd_ticks"] == ticks


def test_running_cost_after_each_chunk_is_the_cost_of_the_tokens_so_far(sim):
    chunks, _ = chunks_of(sim, chat(chunks=3))
    costs = [c["usage"]["cost_in_usd_ticks"] for c in chunks]
    assert costs == [cost(FAST_PRICE, prompt=5, cached=0, output=n) for n in (1, 2, 3)]


def test_reasoning_model_reports_reasoning_apart_and_bills_it(sim):
    usage = post(sim, "/v1/chat/completions", chat(model=REASONING, chunks=4)).json()["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning > 0
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == 5 + 4 + reasoning
    assert usage["cost_in_usd_ticks"] == cost(FAST_PRICE, prompt=5, cached=0, output=4 + reasoning)


def test_reasoning_tokens_are_settable_and_non_reasoning_models_have_none(sim):
    body = chat(model=REASONING, sim={"reasoning_tokens": 10})
    usage = post(sim, "/v1/chat/completions", body).json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 10
    body = chat(model=FAST, sim={"reasoning_tokens": 10})
    usage = post(sim, "/v1/chat/completions", body).json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_image_parts_count_as_image_tokens(sim):
    content = [
        {"type": "image_url", "image_url": {"url": "https://x"}},
        {"type": "text", "text": "a b"},
    ]
    body = {"model": "grok-2-vision-1212", "messages": [{"role": "user", "content": content}]}
    details = post(sim, "/v1/chat/completions", body).json()["usage"]["prompt_tokens_details"]
    assert details["text_tokens"] == 2
    assert details["image_tokens"] > 0


def test_include_usage_adds_a_usage_only_chunk_after_the_last_content_chunk(sim):
    chunks, raw = chunks_of(sim, {**chat(chunks=3), "stream_options": {"include_usage": True}})
    assert raw.endswith("data: [DONE]\n\n")
    assert [len(c["choices"]) for c in chunks] == [1, 1, 1, 0]
    assert chunks[-1]["usage"] == chunks[-2]["usage"]


def test_without_include_usage_no_usage_only_chunk_is_sent(sim):
    chunks, _ = chunks_of(sim, chat(chunks=3))
    assert all(c["choices"] for c in chunks)


def test_the_sdk_reads_the_xai_stream(sim):
    stream = sdk(sim).chat.completions.create(
        model=FAST, messages=PROMPT, stream=True, extra_body={"sim": {"chunks": 4}}
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Once upon a time"


# --- chat, OpenAI's shape -------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_sim() -> Iterator[Proc]:
    with running(start_simulator("--openai-shapes")) as proc:
        yield proc


def test_openai_shapes_put_usage_only_on_the_trailing_chunk(openai_sim):
    body = {**chat(model=REASONING, chunks=3), "stream_options": {"include_usage": True}}
    chunks, _ = chunks_of(openai_sim, body)
    assert [c["usage"] for c in chunks[:-1]] == [None, None, None]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert "cost_in_usd_ticks" not in usage and "num_sources_used" not in usage
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert usage["completion_tokens"] == 3 + reasoning  # OpenAI counts reasoning inside


def test_openai_shapes_send_no_usage_unasked(openai_sim):
    chunks, raw = chunks_of(openai_sim, chat(chunks=3))
    assert len(chunks) == 3
    assert '"usage"' not in raw


# --- errors and the key ---------------------------------------------------------------------


def test_missing_key_is_xai_401_in_xai_error_shape(sim):
    response = post(sim, "/v1/chat/completions", chat(), headers={})
    assert response.status_code == 401
    assert set(response.json()) == {"code", "error"}


def test_wrong_key_is_xai_400_naming_a_redacted_key():
    with running(start_simulator("--api-key", "xai-the-right-key")) as proc:
        response = post(proc, "/v1/chat/completions", chat(), {"Authorization": "Bearer xai-wrong"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "Client specified an invalid argument"
    assert body["error"].startswith("Incorrect API key provided: xa***ng.")


def test_unknown_model_is_xai_404(sim):
    response = post(sim, "/v1/chat/completions", chat(model="gpt-4o"))
    assert response.status_code == 404
    assert response.json() == {
        "code": "Some requested entity was not found",
        "error": "The model gpt-4o does not exist or your team does not have access to it.",
    }


def test_status_fault_is_answered_in_xai_shape_with_retry_after(sim):
    response = post(sim, "/v1/chat/completions", chat(sim={"fault": "status", "status": 429}))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["code"] == "Too Many Requests"


def test_api_key_reports_an_ok_key_with_xais_fields(sim):
    response = httpx.get(f"{sim.url}/v1/api-key", headers=AUTH)
    assert response.status_code == 200
    info = response.json()
    assert info["redacted_api_key"] == "xai-...6789"
    assert info["acls"] == ["api-key:model:*", "api-key:endpoint:*"]
    assert info["api_key_id"] and info["team_id"] and info["user_id"]
    flags = ("api_key_blocked", "api_key_disabled", "team_blocked")
    assert [info[flag] for flag in flags] == [False, False, False]
    assert stats(sim)["api_key_requests"] == 1


@pytest.mark.parametrize("status", ["blocked", "disabled"])
def test_a_blocked_or_disabled_key_reads_its_status_and_is_refused_elsewhere(sim, status):
    assert httpx.post(f"{sim.url}/sim/key-status", json={"status": status}).status_code == 200
    info = httpx.get(f"{sim.url}/v1/api-key", headers=AUTH).json()
    assert info[f"api_key_{status}"] is True
    for path, body in (
        ("/v1/chat/completions", chat()),
        ("/v1/responses", {"model": FAST, "input": "x"}),
    ):
        refused = post(sim, path, body)
        assert refused.status_code == 403
        assert refused.json()["code"] == "Permission denied"


def test_key_status_flag_sets_the_status_that_reset_returns_to():
    with running(start_simulator("--key-status", "disabled")) as proc:
        httpx.post(f"{proc.url}/sim/key-status", json={"status": "ok"})
        httpx.post(f"{proc.url}/sim/reset")
        info = httpx.get(f"{proc.url}/v1/api-key", headers=AUTH).json()
    assert info["api_key_disabled"] is True


def test_an_unknown_key_status_is_refused(sim):
    assert httpx.post(f"{sim.url}/sim/key-status", json={"status": "gone"}).status_code == 400


# --- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "each"), [("grok-2-image-1212", 700_000_000), ("grok-imagine-image", 200_000_000)]
)
def test_image_generation_reports_its_cost_per_image(sim, model, each):
    body = {"model": model, "prompt": "a red fox", "n": 2}
    answer = post(sim, "/v1/images/generations", body).json()
    assert len(answer["data"]) == 2
    assert answer["usage"] == {"cost_in_usd_ticks": 2 * each}


# --- the Responses API ----------------------------------------------------------------------


def test_sdk_creates_a_response_and_reads_its_text_and_usage(sim):
    response = sdk(sim).responses.create(
        model=FAST, input="one two three", extra_body={"sim": {"chunks": 4}}
    )
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Once upon a time"
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (3, 4, 7)
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert usage.model_extra["cost_in_usd_ticks"] == cost(FAST_PRICE, prompt=3, cached=0, output=4)


def test_sdk_parses_every_event_of_a_response_stream(sim):
    stream = sdk(sim).responses.create(
        model=REASONING, input="one two three", stream=True, extra_body={"sim": {"chunks": 4}}
    )
    events = list(stream)
    assert [e.type for e in events] == STREAM_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert "".join(d.delta for d in deltas) == completed.response.output_text == "Once upon a time"
    usage = completed.response.usage
    reasoning = usage.output_tokens_details.reasoning_tokens
    assert reasoning > 0 and usage.output_tokens == 4 + reasoning  # xAI counts reasoning inside
    expected = cost(FAST_PRICE, prompt=3, cached=0, output=4 + reasoning)
    assert usage.model_extra["cost_in_usd_ticks"] == expected


def test_response_stream_ends_after_response_completed_without_done(sim):
    raw = post(sim, "/v1/responses", {"model": FAST, "input": "hi", "stream": True}).text
    assert raw.split("\n\n")[-2].startswith("event: response.completed\ndata: ")
    assert "[DONE]" not in raw


def test_streamed_and_whole_responses_report_the_same_usage(sim):
    body = {"model": REASONING, "input": "one two", "sim": {"chunks": 5, "cached_tokens": 1}}
    whole = post(sim, "/v1/responses", body).json()
    raw = post(sim, "/v1/responses", {**body, "stream": True}).text
    completed = json.loads(data_events(raw)[-1])
    assert completed["response"]["usage"] == whole["usage"]


def test_a_stored_response_is_retrieved_then_deleted(sim):
    client = sdk(sim)
    created = client.responses.create(model=FAST, input="hi")
    assert client.responses.retrieve(created.id).output_text == created.output_text
    deleted = httpx.delete(f"{sim.url}/v1/responses/{created.id}", headers=AUTH)
    assert deleted.json() == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    gone = httpx.get(f"{sim.url}/v1/responses/{created.id}", headers=AUTH)
    assert gone.status_code == 404 and set(gone.json()) == {"code", "error"}


def test_a_streamed_response_is_stored_when_it_completes(sim):
    raw = post(sim, "/v1/responses", {"model": FAST, "input": "hi", "stream": True}).text
    response_id = json.loads(data_events(raw)[-1])["response"]["id"]
    assert httpx.get(f"{sim.url}/v1/responses/{response_id}", headers=AUTH).status_code == 200


def test_store_false_is_not_retrievable(sim):
    created = post(sim, "/v1/responses", {"model": FAST, "input": "hi", "store": False}).json()
    assert created["store"] is False
    assert httpx.get(f"{sim.url}/v1/responses/{created['id']}", headers=AUTH).status_code == 404
    assert stats(sim)["stored_responses"] == 0


def test_previous_response_id_bills_the_history_again_as_cached_input(sim):
    first = post(sim, "/v1/responses", {"model": FAST, "input": "one two three"}).json()
    body = {"model": FAST, "input": "four", "previous_response_id": first["id"]}
    second = post(sim, "/v1/responses", body).json()
    history = first["usage"]["total_tokens"]
    assert second["previous_response_id"] == first["id"]
    assert second["usage"]["input_tokens"] == history + 1
    assert second["usage"]["input_tokens_details"]["cached_tokens"] == history


def test_unknown_previous_response_id_is_xai_404(sim):
    body = {"model": FAST, "input": "hi", "previous_response_id": "resp_nope"}
    response = post(sim, "/v1/responses", body)
    assert response.status_code == 404
    assert response.json()["code"] == "Some requested entity was not found"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"input": "hi"}, 422),
        ({"model": FAST}, 422),
        ({"model": FAST, "input": 3}, 422),
        ({"model": FAST, "input": "hi", "store": "yes"}, 422),
        ([1, 2], 400),
    ],
)
def test_a_malformed_responses_body_is_refused_as_xai_does(sim, body, status):
    response = post(sim, "/v1/responses", body)
    assert response.status_code == status
    assert set(response.json()) == {"code", "error"}


def test_response_ids_are_unique(sim):
    ids = {
        post(sim, "/v1/responses", {"model": FAST, "input": "hi"}).json()["id"] for _ in range(20)
    }
    assert len(ids) == 20


def test_the_oldest_stored_response_is_dropped_past_the_limit():
    with running(start_simulator("--max-stored-responses", "2")) as proc:
        ids = [
            post(proc, "/v1/responses", {"model": FAST, "input": "hi"}).json()["id"]
            for _ in range(3)
        ]
        found = [httpx.get(f"{proc.url}/v1/responses/{i}", headers=AUTH).status_code for i in ids]
        stored = stats(proc)["stored_responses"]
    assert found == [404, 200, 200]
    assert stored == 2


# --- faults on the Responses API ------------------------------------------------------------


def responses_stream(sim: Proc, fault: dict) -> str:
    body = {"model": FAST, "input": "hi", "stream": True, "sim": {"chunks": 6, **fault}}
    received = []
    try:
        with httpx.stream("POST", f"{sim.url}/v1/responses", json=body, headers=AUTH) as response:
            for text in response.iter_text():
                received.append(text)
    except httpx.RemoteProtocolError:
        received.append("<reset>")
    return "".join(received)


def test_a_dropped_responses_stream_ends_without_completing_or_storing(sim):
    raw = responses_stream(sim, {"fault": "drop", "fault_after": 2})
    assert raw.endswith("<reset>")
    assert raw.count("event: response.output_text.delta") == 2
    assert "response.completed" not in raw
    assert stats(sim)["stored_responses"] == 0


def test_a_bad_chunk_in_a_responses_stream_is_sent_after_fault_after_deltas(sim):
    data = data_events(responses_stream(sim, {"fault": "bad_chunk", "fault_after": 3}))
    assert data[4 + 3] == "{not json"
    assert json.loads(data[-1])["type"] == "response.completed"


def test_a_stalled_responses_stream_goes_silent_for_stall_ms(sim):
    started = time.monotonic()
    raw = responses_stream(sim, {"fault": "stall", "fault_after": 1, "stall_ms": 600})
    assert time.monotonic() - started >= 0.6
    assert "response.completed" in raw


def test_status_fault_on_responses_applies_only_fault_times_per_key(sim):
    fault = {"fault": "status", "status": 503, "fault_times": 1, "key": "r-1"}
    body = {"model": FAST, "input": "hi", "sim": fault}
    first, second = post(sim, "/v1/responses", body), post(sim, "/v1/responses", body)
    assert first.status_code == 503 and first.json()["code"] == "Service unavailable"
    assert second.status_code == 200


def test_first_byte_delay_holds_back_a_responses_answer(sim):
    started = time.monotonic()
    body = {"model": FAST, "input": "hi", "sim": {"first_byte_delay_ms": 400}}
    assert post(sim, "/v1/responses", body).status_code == 200
    assert time.monotonic() - started >= 0.4


def test_a_client_leaving_a_responses_stream_is_counted(sim):
    body = {"model": FAST, "input": "hi", "stream": True, "sim": {"chunks": 50, "delay_ms": 50}}
    with httpx.stream("POST", f"{sim.url}/v1/responses", json=body, headers=AUTH) as response:
        next(response.iter_bytes())
    deadline = time.monotonic() + 5
    while stats(sim)["disconnects"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    counters = stats(sim)
    assert (counters["disconnects"], counters["active_streams"]) == (1, 0)
    assert counters["streams_started"] == 1 and counters["streams_completed"] == 0


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_a_dropped_whole_answer_resets_the_connection(sim, path):
    body = {"model": FAST, "messages": PROMPT, "input": "hi", "sim": {"fault": "drop"}}
    with pytest.raises(httpx.RemoteProtocolError):
        post(sim, path, body)


def test_a_bad_chunk_whole_answer_is_200_and_not_json(sim):
    response = post(
        sim, "/v1/responses", {"model": FAST, "input": "hi", "sim": {"fault": "bad_chunk"}}
    )
    assert response.status_code == 200
    assert response.content == b"{not json"


# --- stats ----------------------------------------------------------------------------------


def test_reset_clears_counters_stored_responses_and_key_status(sim):
    post(sim, "/v1/responses", {"model": FAST, "input": "hi"})
    httpx.post(f"{sim.url}/sim/key-status", json={"status": "blocked"})
    before = stats(sim)
    assert (before["responses_requests"], before["stored_responses"]) == (1, 1)
    assert before["key_status"] == "blocked"
    httpx.post(f"{sim.url}/sim/reset")
    after = stats(sim)
    assert (after["requests"], after["stored_responses"], after["key_status"]) == (0, 0, "ok")
