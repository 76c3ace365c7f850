"""Every error row of SPEC section 2, over real HTTP, and the SDK exceptions they raise."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.support.keyfiles import MAIN_SECRET, MODEL, key_entry, keys_toml
from tests.support.processes import free_port, gateway_env, start_gateway, start_simulator

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = "/api/v1/chat/completions"


def post(gateway, body, secret: str | None = MAIN_SECRET, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=30, **kwargs)


def chat(**sim) -> dict:
    body = {"model": MODEL, "messages": MESSAGES}
    if sim:
        body["sim"] = sim
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert "Traceback" not in response.text
    return error


@pytest.fixture(scope="module")
def strict_gateway(simulator, tmp_path_factory):
    """A gateway with short upstream timeouts, one retry, and a small body limit."""
    keys = tmp_path_factory.mktemp("strict") / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    proc = start_gateway(
        gateway_env(
            simulator,
            str(keys),
            UPSTREAM_FIRST_BYTE_TIMEOUT="0.5",
            UPSTREAM_IDLE_TIMEOUT="0.5",
            UPSTREAM_RETRIES="1",
            GATEWAY_MAX_BODY_BYTES="4096",
        )
    )
    yield proc
    proc.stop()


# --- our own checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer gk-unknown"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not-bearer"],
)
def test_bad_or_missing_key_is_401_invalid_api_key(gateway, headers):
    response = httpx.post(f"{gateway.url}{CHAT}", json=chat(), headers=headers)
    error = assert_error(response, 401, "invalid_api_key")
    assert "gk-unknown" not in error["message"]


def test_broken_json_is_400(gateway):
    response = post(gateway, None, content=b'{"model": "x", "messages": [')
    assert_error(response, 400, "invalid_request_error")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": "hi"}, "messages"),
        ({"model": 3, "messages": MESSAGES}, "model"),
        ({"model": MODEL, "messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"model": MODEL, "messages": MESSAGES, "max_tokens": -1}, "max_tokens"),
    ],
    ids=["no-model", "no-messages", "messages-str", "model-int", "stream-str", "role", "max"],
)
def test_wrong_or_missing_fields_are_400_naming_the_field(gateway, body, param):
    error = assert_error(post(gateway, body), 400, "invalid_request_error")
    assert error["param"] == param


def test_json_that_is_not_an_object_is_400(gateway):
    assert_error(post(gateway, [1, 2]), 400, "invalid_request_error")


def test_body_over_the_limit_is_413_and_the_next_request_is_served(strict_gateway):
    big = chat()
    big["messages"] = [{"role": "user", "content": "x" * 10_000}]
    assert_error(post(strict_gateway, big), 413, "request_too_large")
    assert post(strict_gateway, chat()).status_code == 200


def test_chunked_body_over_the_limit_is_413(strict_gateway):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    response = httpx.post(
        f"{strict_gateway.url}{CHAT}",
        content=chunks(),
        headers={"Authorization": f"Bearer {MAIN_SECRET}"},
    )
    assert_error(response, 413, "request_too_large")


def test_unknown_fields_are_passed_to_the_upstream(gateway, sim_reset):
    body = {**chat(), "x_custom": {"a": 1}}
    assert post(gateway, body).status_code == 200
    seen = httpx.get(f"{sim_reset.url}/sim/stats").json()["last_request"]["body"]
    assert seen["x_custom"] == {"a": 1}


def test_unknown_path_is_an_openai_shaped_404(gateway):
    response = httpx.get(f"{gateway.url}/api/v1/nothing-here")
    assert_error(response, 404, "not_found")


def test_wrong_method_is_an_openai_shaped_405_with_allow(gateway):
    response = httpx.get(f"{gateway.url}/api/v1/chat/completions")
    error = assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert "use POST" in error["message"]
    response = httpx.post(f"{gateway.url}/api/v1/models")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"


def test_after_every_kind_of_bad_input_the_next_request_is_served(gateway):
    post(gateway, None, content=b"\xff\xfe not json")
    post(gateway, {"model": 1})
    post(gateway, chat(), secret="nope")
    assert post(gateway, chat()).status_code == 200


# --- upstream failures, rewritten -------------------------------------------------------


def test_upstream_429_is_429_upstream_rate_limited_with_retry_after(gateway):
    response = post(gateway, chat(fault="status", status=429))
    error = assert_error(response, 429, "upstream_rate_limited")
    assert response.headers["retry-after"] == "7"
    assert "Rate limit reached" in error["message"]


def test_upstream_4xx_keeps_its_status_and_message(gateway):
    response = post(gateway, {"model": "not-a-model", "messages": MESSAGES})
    error = assert_error(response, 404, "model_not_found")
    assert "not-a-model" in error["message"]


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_is_502_upstream_auth_failed(gateway, status):
    assert_error(post(gateway, chat(fault="status", status=status)), 502, "upstream_auth_failed")


def test_upstream_rejecting_the_gateway_key_with_400_is_502_and_hides_the_key(simulator, tmp_path):
    sim = start_simulator("--api-key", "the-right-key")
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    gw = start_gateway(gateway_env(sim, str(keys), XAI_API_KEY="the-wrong-key"))
    try:
        error = assert_error(post(gw, chat()), 502, "upstream_auth_failed")
        # xAI's own message quotes part of the key ("xa***"): it goes to the log, not here.
        assert "Incorrect API key" not in error["message"]
        assert "***" not in error["message"] and "the-wrong-key" not in error["message"]
    finally:
        gw.stop()
        sim.stop()


def test_upstream_5xx_is_502_upstream_error_after_retries(gateway, sim_reset):
    response = post(gateway, chat(fault="status", status=500))
    error = assert_error(response, 502, "upstream_error")
    assert "Simulated upstream failure" in error["message"]


def test_upstream_503_is_retried_and_then_served(gateway, sim_reset):
    response = post(gateway, chat(fault="status", status=503, fault_times=1, key="retry-1"))
    assert response.status_code == 200
    assert httpx.get(f"{sim_reset.url}/sim/stats").json()["chat_requests"] == 2


def test_streaming_request_is_retried_before_its_first_byte(gateway, sim_reset):
    body = {**chat(fault="status", status=502, fault_times=1, key="retry-2"), "stream": True}
    response = post(gateway, body)
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")


def test_upstream_4xx_is_never_retried(gateway, sim_reset):
    post(gateway, chat(fault="status", status=422))
    assert httpx.get(f"{sim_reset.url}/sim/stats").json()["chat_requests"] == 1


def test_unreachable_upstream_is_502_upstream_error(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    env = {
        "XAI_API_KEY": "k",
        "XAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "GATEWAY_KEYS_FILE": str(keys),
        "GATEWAY_DRAIN_DELAY_SECONDS": "0",
        "UPSTREAM_RETRIES": "1",
    }
    gw = start_gateway(env)
    try:
        for stream in (False, True):
            response = post(gw, {**chat(), "stream": stream})
            assert_error(response, 502, "upstream_error")
    finally:
        gw.stop()


def test_no_upstream_headers_in_time_is_504_upstream_timeout(strict_gateway):
    response = post(strict_gateway, {**chat(first_byte_delay_ms=3000), "stream": True})
    assert_error(response, 504, "upstream_timeout")


def test_upstream_silent_mid_stream_past_the_idle_timeout_ends_with_an_error_event(
    strict_gateway,
):
    body = {**chat(fault="stall", fault_after=2, chunks=5), "stream": True}
    response = post(strict_gateway, body)
    assert response.status_code == 200
    last = response.text.rstrip("\n").split("\n\n")[-1]
    assert json.loads(last[6:])["error"] == "API error: no data from the upstream for 0.5s"


# --- what the OpenAI SDK raises ---------------------------------------------------------


def client(gateway, key: str = MAIN_SECRET) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{gateway.url}/api/v1", max_retries=0)


def test_sdk_raises_authentication_error_for_a_bad_key(gateway):
    with pytest.raises(openai.AuthenticationError) as raised:
        client(gateway, "gk-wrong").chat.completions.create(model=MODEL, messages=MESSAGES)
    assert raised.value.code == "invalid_api_key"


def test_sdk_raises_bad_request_with_the_message(gateway):
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway).chat.completions.create(model=MODEL, messages=[])
    assert "messages" in raised.value.message


def test_sdk_raises_rate_limit_error_for_upstream_429(gateway):
    with pytest.raises(openai.RateLimitError) as raised:
        client(gateway).chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_body={"sim": {"fault": "status", "status": 429}}
        )
    assert raised.value.code == "upstream_rate_limited"


def test_sdk_shows_the_upstream_message_not_a_bare_status(gateway):
    with pytest.raises(openai.NotFoundError) as raised:
        client(gateway).chat.completions.create(model="nope-model", messages=MESSAGES)
    assert "nope-model" in raised.value.message
