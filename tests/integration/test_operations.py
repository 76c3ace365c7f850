"""Operating a real gateway process: graceful SIGTERM, JSON logs, request ids, metrics."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from tests.support.keyfiles import MAIN_SECRET, MODEL, key_entry, keys_toml
from tests.support.processes import gateway_env, start_gateway


def access_lines(output: str) -> list[dict]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "access"]


def test_sigterm_lets_a_stream_in_flight_finish_then_exits_0(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    gw = start_gateway(gateway_env(simulator, str(keys), GATEWAY_DRAIN_DELAY_SECONDS="1"))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "sim": {"chunks": 10, "delay_ms": 200},
    }
    result: dict = {}

    def stream() -> None:
        with httpx.stream(
            "POST",
            f"{gw.url}/api/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {MAIN_SECRET}"},
            timeout=15,
        ) as response:
            result["raw"] = response.read()

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(0.5)  # the stream is under way
    gw.popen.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    ready = httpx.get(f"{gw.url}/readyz")
    refused = httpx.post(
        f"{gw.url}/api/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {MAIN_SECRET}"},
    )
    worker.join(15)
    assert gw.popen.wait(20) == 0
    assert ready.status_code == 503
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_shutting_down"
    assert result["raw"].endswith(b"data: [DONE]\n\n")


def test_every_line_logged_before_exit_is_written(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    gw = start_gateway(gateway_env(simulator, str(keys), GATEWAY_DRAIN_DELAY_SECONDS="0"))
    httpx.get(f"{gw.url}/api/v1/models", headers={"X-Request-ID": "req-last-1"})
    assert gw.stop() == 0  # SIGTERM at once: the request's line may still be queued
    assert [e["status"] for e in access_lines(gw.output) if e["request_id"] == "req-last-1"] == [
        401
    ]
    last = json.loads(gw.output.splitlines()[-1])
    assert last["logger"] == "uvicorn.error" and "Finished server process" in last["message"]


def test_access_log_is_one_json_line_per_request_without_the_key(gateway):
    response = httpx.post(
        f"{gateway.url}/api/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "secret prompt"}]},
        headers={"Authorization": f"Bearer {MAIN_SECRET}", "X-Request-ID": "req-log-1"},
    )
    assert response.headers["x-request-id"] == "req-log-1"
    time.sleep(0.2)
    output = gateway.read_output()
    assert MAIN_SECRET not in output
    assert "secret prompt" not in output
    line = [entry for entry in access_lines(output) if entry["request_id"] == "req-log-1"]
    assert len(line) == 1
    expected = {"key_id", "tenant", "model", "status", "stream", "ttfb_ms", "duration_ms"}
    assert expected | {"tokens", "reason"} <= set(line[0])
    assert line[0]["key_id"] == "main" and line[0]["status"] == 200
    assert line[0]["tokens"] > 0


def test_a_request_id_is_made_when_the_client_sends_none(gateway):
    response = httpx.get(f"{gateway.url}/api/v1/models", headers={"Authorization": "Bearer x"})
    assert len(response.headers["x-request-id"]) >= 16


def test_refusals_are_logged_with_their_reason(gateway):
    httpx.post(
        f"{gateway.url}/api/v1/chat/completions",
        json={},
        headers={"Authorization": "Bearer gk-nope", "X-Request-ID": "req-refused-1"},
    )
    time.sleep(0.2)
    line = [e for e in access_lines(gateway.read_output()) if e["request_id"] == "req-refused-1"]
    assert line[0]["status"] == 401 and line[0]["reason"] == "invalid_api_key"


def test_metrics_count_what_was_sent(gateway):
    def count(text: str, needle: str) -> float:
        for line in text.splitlines():
            if line.startswith(needle + " "):
                return float(line.split()[-1])
        return 0.0

    series = 'gateway_requests_total{key_id="main",status="200"}'
    before = count(httpx.get(f"{gateway.url}/metrics").text, series)
    for _ in range(3):
        httpx.post(
            f"{gateway.url}/api/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {MAIN_SECRET}"},
        )
    text = httpx.get(f"{gateway.url}/metrics").text
    assert count(text, series) == before + 3
    for name in (
        "gateway_active_streams",
        "gateway_ttfb_seconds_bucket",
        "gateway_request_duration_seconds_bucket",
        "gateway_limiter_fallback_active",
    ):
        assert name in text


def test_health_and_readiness_need_no_key(gateway):
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_two_workers_aggregate_metrics_and_exit_0(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    gw = start_gateway(gateway_env(simulator, str(keys), GATEWAY_WORKERS="2"))
    try:
        for _ in range(6):
            response = httpx.post(
                f"{gw.url}/api/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
                headers={"Authorization": f"Bearer {MAIN_SECRET}"},
            )
            assert response.status_code == 200
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'gateway_requests_total{key_id="main",status="200"} 6.0' in metrics
    finally:
        assert gw.stop() == 0
