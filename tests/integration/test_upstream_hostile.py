"""Upstream answers are checked, not trusted (SPEC section 9): each attack an upstream (or
whatever answers at XAI_BASE_URL) can make, replayed against a real gateway process, which
answers 502 with an OpenAI-shaped body or cuts the stream with the error event, holds bounded
memory, and logs no traceback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psutil
import pytest

from service.sse.usage_cut import cut_usage
from tests.support.hostile_upstream import start_hostile_upstream, xai_events
from tests.support.keyfiles import MAIN_SECRET, key_entry, keys_toml
from tests.support.processes import start_gateway

AUTH = {"Authorization": f"Bearer {MAIN_SECRET}"}
MB = 1_000_000
HUGE = 300_000_000  # the sizes that used to take 604 MB (200) and 1,059 MB (500) of RSS
RESPONSE_CAP = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def hostile():
    proc = start_hostile_upstream()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gateway(hostile, tmp_path_factory):
    keys = tmp_path_factory.mktemp("hostile") / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    env = {
        "XAI_API_KEY": "xai-test-upstream-key",
        "XAI_BASE_URL": f"{hostile.url}/v1",
        "GATEWAY_KEYS_FILE": str(keys),
        "GATEWAY_DRAIN_DELAY_SECONDS": "0",
        "UPSTREAM_RETRIES": "0",
        "UPSTREAM_MAX_RESPONSE_BYTES": str(RESPONSE_CAP),
        "SSE_KEEPALIVE_SECONDS": "0.3",
    }
    proc = start_gateway(env)
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def no_traceback(gateway):
    yield
    assert "Traceback" not in gateway.read_output()


def post(gateway, hostile: dict, stream: bool = True, **body) -> httpx.Response:
    payload = {"model": "grok-4.3", "messages": [{"role": "user", "content": "hi"}]}
    payload.update(stream=stream, hostile=hostile, **body)
    return httpx.post(
        f"{gateway.url}/api/v1/chat/completions", json=payload, headers=AUTH, timeout=60
    )


def assert_502(response: httpx.Response) -> str:
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_error"
    return error["message"]


def error_event(raw: bytes) -> str:
    """The seed's error event that ends a cut stream (and no [DONE] before it)."""
    last = raw.rstrip(b"\n").split(b"\n\n")[-1]
    assert last.startswith(b"data: "), raw[-200:]
    assert b"data: [DONE]" not in raw
    return json.loads(last[6:])["error"]


@contextmanager
def peak_rss(gateway) -> Iterator[dict]:
    """Sample the gateway's RSS every 5 ms; yields {"growth": peak - start, in bytes}."""
    process = psutil.Process(gateway.popen.pid)
    start = process.memory_info().rss
    result = {"growth": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            result["growth"] = max(result["growth"], process.memory_info().rss - start)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()


def bytes_sent(hostile, case: str) -> int:
    return httpx.get(f"{hostile.url}/stats").json()["bytes_sent"].get(case, 0)


def wait_until_stalled(hostile, case: str, within: float = 10.0) -> int:
    """Bytes the upstream had sent once it stopped being able to send more."""
    deadline = time.monotonic() + within
    last = -1
    while time.monotonic() < deadline:
        now = bytes_sent(hostile, case)
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    raise AssertionError(f"the upstream kept sending: {last} bytes")


# --- the SSE relay -------------------------------------------------------------------------


def test_a_300_mb_line_without_a_blank_line_ends_the_stream_at_the_event_cap(gateway):
    started = time.monotonic()
    with peak_rss(gateway) as rss:
        response = post(gateway, {"case": "endless_event", "size": HUGE})
    assert response.status_code == 200
    assert error_event(response.content) == (
        "API error: the upstream sent an event larger than 1048576 bytes"
    )
    assert time.monotonic() - started < 5  # it used to buffer for 60 s
    assert rss["growth"] < 30 * MB


def test_a_finished_event_over_the_cap_is_not_relayed(gateway):
    response = post(gateway, {"case": "big_event", "size": 2 * 1024 * 1024})
    first = cut_usage(xai_events(1, usage_chunk=False)[0])  # usage the OpenAI way
    assert response.content.startswith(first)
    assert len(response.content) < 4096  # the 2 MiB event never reaches the client
    assert "larger than 1048576 bytes" in error_event(response.content)


def test_a_malformed_usage_event_cuts_the_stream_before_done_never_after(gateway):
    response = post(gateway, {"case": "bad_usage", "shape": "open"})
    assert error_event(response.content) == "API error: the upstream sent a malformed event"


def test_a_client_that_never_reads_holds_the_relay_not_the_gateways_memory(gateway, hostile):
    body = json.dumps(
        {
            "model": "grok-4.3",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "hostile": {"case": "firehose", "size": HUGE},
        }
    ).encode()
    before = bytes_sent(hostile, "firehose")
    with peak_rss(gateway) as rss, socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", gateway.port))
        client.sendall(
            b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
            b"Authorization: Bearer " + MAIN_SECRET.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        stalled_at = wait_until_stalled(hostile, "firehose")
        time.sleep(1.0)  # the client reads nothing all along
        assert bytes_sent(hostile, "firehose") == stalled_at  # backpressure reached upstream
    assert stalled_at - before < 30 * MB  # socket buffers, not the 300 MB stream
    assert rss["growth"] < 20 * MB
    ready = httpx.get(f"{gateway.url}/readyz").json()
    assert ready["status"] == "ready"


# --- non-streaming answers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        {"content_type": "text/html", "body": "<html><body>Welcome to nginx!</body></html>"},
        {"content_type": "application/json", "body": ""},
        {"content_type": "application/json", "body": "[1, 2, 3]"},
        {"content_type": "application/json", "body": '"just a string"'},
        {"content_type": "application/json", "body": '{"truncated": '},
        {"content_type": "text/event-stream", "body": 'data: {"a": 1}\n\ndata: [DONE]\n\n'},
    ],
    ids=["html", "empty", "array", "string", "truncated", "sse-where-json-was-asked"],
)
def test_a_2xx_that_is_not_a_json_object_is_502(gateway, answer):
    message = assert_502(post(gateway, {"case": "raw", **answer}, stream=False))
    assert message.startswith("Upstream error: the upstream sent ")


def test_a_300_mb_json_answer_is_502_without_being_held_whole(gateway):
    with peak_rss(gateway) as rss:
        response = post(gateway, {"case": "huge_json", "size": HUGE}, stream=False)
    assert f"over the {RESPONSE_CAP}-byte cap" in assert_502(response)
    assert rss["growth"] < RESPONSE_CAP + 40 * MB  # the cap and change, not 300 MB


def test_a_declared_content_length_over_the_cap_is_refused_before_reading(gateway, hostile):
    before = bytes_sent(hostile, "huge_json")
    response = post(gateway, {"case": "huge_json", "size": HUGE, "content_length": True}, False)
    assert f"a body of {HUGE} bytes" in assert_502(response)
    assert bytes_sent(hostile, "huge_json") - before < 30 * MB


def test_a_300_mb_error_body_is_read_to_64_kib(gateway):
    with peak_rss(gateway) as rss:
        response = post(gateway, {"case": "huge_error", "size": HUGE}, stream=False)
    message = assert_502(response)
    assert message.startswith("Upstream error (HTTP 500): ")
    assert len(message) < 70 * 1024
    assert rss["growth"] < 30 * MB


# --- streaming answers and redirects ---------------------------------------------------------


def test_a_stream_answered_with_json_is_502(gateway):
    response = post(gateway, {"case": "raw", "content_type": "application/json", "body": "{}"})
    assert "where a stream was asked for" in assert_502(response)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_an_upstream_redirect_is_502_and_never_followed(gateway, hostile, status, stream):
    response = post(gateway, {"case": "redirect", "status": status}, stream=stream)
    assert f"redirect (HTTP {status})" in assert_502(response)
    assert httpx.get(f"{hostile.url}/stats").json()["steal_hits"] == 0  # the key stayed home
