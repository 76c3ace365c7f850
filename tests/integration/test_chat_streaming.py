"""Streaming chat through real HTTP: the gateway process in front of the simulator process."""

from __future__ import annotations

import json
import time

import httpx
import openai
import requests

from tests.support.keyfiles import MAIN_SECRET, MODEL
from tests.support.usage import eventually

MESSAGES = [{"role": "user", "content": "Write a short story about a space adventure"}]


def sdk(gateway, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(api_key=MAIN_SECRET, base_url=f"{gateway.url}/api/v1", **kwargs)


def stream_raw(gateway, body: dict, secret: str = MAIN_SECRET) -> tuple[httpx.Response, bytes]:
    with httpx.stream(
        "POST",
        f"{gateway.url}/api/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    ) as response:
        return response, response.read()


def events(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\n\n"), raw[-80:]
    return [e for e in raw.split(b"\n\n")[:-1] if not e.startswith(b":")]


def test_openai_sdk_streams_the_seed_example(gateway):
    stream = sdk(gateway).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert len(text.split()) == 20


def test_seed_requests_loop_reads_every_chunk_until_done(gateway):
    response = requests.post(
        f"{gateway.url}/api/v1/chat/completions",
        headers={
            "Authorization": f"Bearer {MAIN_SECRET}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        },
        json={"model": MODEL, "messages": MESSAGES, "stream": True},
        stream=True,
        timeout=30,
    )
    words, saw_done = [], False
    for line in response.iter_lines():
        if line:
            line = line.decode("utf-8")
            if line.startswith("data: "):
                if line.strip() == "data: [DONE]":
                    saw_done = True
                    break
                chunk = json.loads(line[6:])
                content = chunk["choices"][0]["delta"].get("content", "")
                if content:
                    words.append(content)
    assert saw_done
    assert len("".join(words).split()) == 20


def test_stream_is_framed_as_sse_events_ending_with_done(gateway):
    response, raw = stream_raw(gateway, {"model": MODEL, "messages": MESSAGES, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    parts = events(raw)
    assert parts[-1] == b"data: [DONE]"
    for part in parts[:-1]:
        assert part.startswith(b"data: ")
        assert json.loads(part[6:])["object"] == "chat.completion.chunk"


def test_usage_chunk_is_dropped_when_the_client_did_not_ask(gateway):
    _, raw = stream_raw(gateway, {"model": MODEL, "messages": MESSAGES, "stream": True})
    chunks = [json.loads(part[6:]) for part in events(raw)[:-1]]
    # xAI's content chunks carry the running usage and pass as they are; only the trailing
    # usage-only chunk, asked for on the client's behalf, is gone.
    assert all(chunk["choices"] for chunk in chunks)


def test_usage_chunk_is_relayed_when_the_client_asked(gateway):
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, raw = stream_raw(gateway, body)
    last = json.loads(events(raw)[-2][6:])
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] > 0


def test_gateway_asks_the_upstream_for_usage_and_sends_only_its_own_key(gateway, sim_reset):
    stream_raw(gateway, {"model": MODEL, "messages": MESSAGES, "stream": True})
    seen = httpx.get(f"{sim_reset.url}/sim/stats").json()["last_request"]
    assert seen["body"]["stream_options"] == {"include_usage": True}
    assert seen["headers"]["authorization"] == "Bearer xai-test-upstream-key"
    assert MAIN_SECRET not in json.dumps(seen)


def test_non_streaming_completion_through_the_sdk(gateway):
    completion = sdk(gateway).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content
    assert completion.usage.total_tokens > 0


def test_each_chunk_reaches_the_client_as_the_upstream_sends_it(gateway):
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "sim": {"chunks": 5, "delay_ms": 300},
    }
    arrivals = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{gateway.url}/api/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {MAIN_SECRET}"},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    # Spread over ~1.2 s as the upstream spaced them, not delivered in one batch at the end.
    assert arrivals[0] < 0.6
    assert arrivals[-1] - arrivals[0] > 0.8


def test_client_disconnect_closes_the_upstream_request(gateway, sim_reset):
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "sim": {"chunks": 50, "delay_ms": 200},
    }
    with httpx.stream(
        "POST",
        f"{gateway.url}/api/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {MAIN_SECRET}"},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # leave after the first chunk
    deadline = time.monotonic() + 2
    stats = {}
    while time.monotonic() < deadline:
        stats = httpx.get(f"{sim_reset.url}/sim/stats").json()
        if stats["disconnects"] == 1:
            break
        time.sleep(0.05)
    assert stats["disconnects"] == 1
    assert stats["active_streams"] == 0


def wait_for_disconnects(simulator, count: int, within: float = 2.0) -> dict:
    deadline = time.monotonic() + within
    stats = {}
    while time.monotonic() < deadline:
        stats = httpx.get(f"{simulator.url}/sim/stats").json()
        if stats["disconnects"] >= count:
            break
        time.sleep(0.05)
    return stats


def test_client_leaving_a_non_streaming_request_cancels_the_upstream_call(gateway, sim_reset):
    slow = {"model": MODEL, "messages": MESSAGES, "sim": {"first_byte_delay_ms": 10_000}}
    vision = {
        **slow,
        "stream": True,  # the vision fallback: one non-streaming upstream call
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ],
    }
    for number, body in enumerate((slow, vision), start=1):
        started = time.monotonic()
        try:
            httpx.post(
                f"{gateway.url}/api/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {MAIN_SECRET}"},
                timeout=0.5,
            )
            raise AssertionError("the upstream answered despite its 10 s delay")
        except httpx.ReadTimeout:
            pass  # the client gives up and closes the connection
        assert wait_for_disconnects(sim_reset, number)["disconnects"] == number
        assert time.monotonic() - started < 3
    # The gateway is unharmed, and says what happened.
    assert sdk(gateway).chat.completions.create(model=MODEL, messages=MESSAGES).choices

    def disconnect_lines() -> list[dict]:
        output = gateway.read_output().splitlines()
        lines = [json.loads(line) for line in output if '"reason"' in line]
        return [line for line in lines if line["reason"] == "client_disconnected"]

    left = eventually(disconnect_lines, bool)  # access lines reach the log within 0.1 s
    assert left and left[-1]["status"] == 499 and left[-1].get("tokens_estimated") is True
    assert "Traceback" not in gateway.read_output()


def test_keep_alive_comments_flow_while_the_upstream_is_silent(gateway):
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "sim": {"chunks": 3, "fault": "stall", "fault_after": 1, "stall_ms": 1500},
    }
    _, raw = stream_raw(gateway, body)
    assert b": keep-alive\n\n" in raw
    assert raw.endswith(b"data: [DONE]\n\n")
    assert len(events(raw)) == 4  # three chunks and [DONE]; comments are not events


def test_upstream_drop_mid_stream_ends_with_the_seed_error_event(gateway):
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "sim": {"chunks": 10, "fault": "drop", "fault_after": 3},
    }
    response, raw = stream_raw(gateway, body)
    assert response.status_code == 200
    parts = events(raw)
    assert len(parts) == 4
    error = json.loads(parts[-1][6:])
    assert error["error"].startswith("API error: ")
    assert b"[DONE]" not in raw


def test_malformed_upstream_chunk_ends_the_stream_with_an_error_event(gateway):
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "sim": {"chunks": 10, "fault": "bad_chunk", "fault_after": 2},
    }
    _, raw = stream_raw(gateway, body)
    parts = events(raw)
    assert len(parts) == 3
    assert json.loads(parts[-1][6:])["error"] == "API error: the upstream sent a malformed event"


def test_openai_sdk_raises_on_the_mid_stream_error_event(gateway):
    stream = sdk(gateway).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_body={"sim": {"chunks": 10, "fault": "drop", "fault_after": 2}},
    )
    received = []
    try:
        for chunk in stream:
            received.append(chunk)
        raised = False
    except openai.APIError:
        raised = True
    assert raised
    assert len(received) == 2
