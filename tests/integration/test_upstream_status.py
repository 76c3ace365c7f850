"""Know the upstream: GET {XAI_BASE_URL}/api-key, polled at start and every interval, shown in
/readyz, the gauge gateway_upstream_up and one log line per change; never failing readiness."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.hostile_upstream import start_hostile_upstream
from tests.support.keyfiles import MAIN_SECRET, key_entry, keys_toml
from tests.support.processes import free_port, start_gateway
from tests.support.usage import eventually

NOT_XAI_404 = "not an xAI API (404 on /api-key: does XAI_BASE_URL end in /v1?)"


@pytest.fixture(scope="module")
def hostile():
    proc = start_hostile_upstream()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("status") / "keys.toml"
    path.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    return str(path)


def gateway_on(base_url: str, keys_file: str, interval: str = "0.2"):
    return start_gateway(
        {
            "XAI_API_KEY": "xai-test-upstream-key",
            "XAI_BASE_URL": base_url,
            "GATEWAY_KEYS_FILE": keys_file,
            "GATEWAY_DRAIN_DELAY_SECONDS": "0",
            "UPSTREAM_STATUS_INTERVAL_SECONDS": interval,
        }
    )


@pytest.fixture(scope="module")
def gateway(hostile, keys_file):
    """Polls every 0.2 s, so each change of the upstream's answer shows at once."""
    proc = gateway_on(f"{hostile.url}/v1", keys_file)
    yield proc
    proc.stop()


def answer(hostile, mode: str) -> None:
    httpx.post(f"{hostile.url}/control", json={"api_key": mode})


def upstream_state(gateway, becomes: str | None = None, within: float = 5.0) -> str:
    """/readyz's "upstream" (waiting until it `becomes` the given text); readiness holds."""
    deadline = time.monotonic() + within
    while True:
        ready = httpx.get(f"{gateway.url}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        state = ready.json()["upstream"]
        if becomes is None or state == becomes or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def gauge(gateway) -> float:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith('gateway_upstream_up{upstream="default"} '):
            return float(line.split()[-1])
    raise AssertionError("gateway_upstream_up is not exported")


def status_log_lines(gateway) -> list[str]:
    return [line for line in gateway.read_output().splitlines() if "upstream status: " in line]


@pytest.mark.parametrize(
    ("mode", "state"),
    [
        ("ok", "ok"),
        ("blocked", "key blocked"),
        ("disabled", "key disabled"),
        ("team_blocked", "team blocked"),
        ("rejected", "key rejected"),
        ("401", "key rejected"),
        ("403", "key rejected"),
        ("404", NOT_XAI_404),
        ("html", "not an xAI API (no key status in the answer)"),
        ("503", "upstream error (HTTP 503 on /api-key)"),
    ],
)
def test_readyz_reports_what_the_key_status_endpoint_answers(gateway, hostile, mode, state):
    answer(hostile, mode)
    assert upstream_state(gateway, becomes=state) == state


def test_the_gauge_is_1_only_while_the_key_is_usable(gateway, hostile):
    answer(hostile, "ok")
    upstream_state(gateway, becomes="ok")
    assert gauge(gateway) == 1.0
    answer(hostile, "disabled")
    upstream_state(gateway, becomes="key disabled")
    assert gauge(gateway) == 0.0


def test_each_change_is_logged_once(gateway, hostile):
    answer(hostile, "ok")
    upstream_state(gateway, becomes="ok")
    answer(hostile, "blocked")
    upstream_state(gateway, becomes="key blocked")
    # log lines reach stdout within 0.1 s
    eventually(lambda: status_log_lines(gateway)[-1], lambda last: "key blocked" in last)
    before = len(status_log_lines(gateway))
    time.sleep(1.0)  # five more polls, same answer
    assert len(status_log_lines(gateway)) == before
    assert status_log_lines(gateway)[-1].endswith('"upstream status: key blocked (was ok)"}')


def test_readyz_says_checking_until_the_first_answer(hostile, keys_file):
    answer(hostile, "slow")  # the upstream takes its time answering /api-key
    proc = gateway_on(f"{hostile.url}/v1", keys_file, interval="60")
    try:
        assert upstream_state(proc) == "checking"
    finally:
        proc.stop()
        answer(hostile, "ok")


def test_a_base_url_without_v1_is_named_at_start(hostile, keys_file):
    proc = gateway_on(hostile.url, keys_file, interval="60")  # no /v1
    try:
        assert upstream_state(proc, becomes=NOT_XAI_404, within=2.0) == NOT_XAI_404
    finally:
        proc.stop()
    assert NOT_XAI_404 in proc.output


def test_an_unreachable_upstream_is_reported_and_readiness_holds(keys_file):
    proc = gateway_on(f"http://127.0.0.1:{free_port()}/v1", keys_file, interval="60")
    try:
        assert upstream_state(proc, becomes="unreachable") == "unreachable"
        assert gauge(proc) == 0.0
    finally:
        proc.stop()
