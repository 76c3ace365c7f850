"""The smaller things a new user met (issue 28, point 9): a base URL without `/v1`, where an
unreachable Redis is, a key file that failed to reload, and where the simulator listens."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.keyfiles import MAIN_SECRET, MODEL, key_entry, keys_toml
from tests.support.processes import free_port, gateway_env, running, start_gateway

AUTH = {"Authorization": f"Bearer {MAIN_SECRET}"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def requests_today(gateway) -> int:
    usage = httpx.get(f"{gateway.url}/api/v1/usage", headers=AUTH).json()
    return usage["usage"]["key"]["today"]["requests"]


@pytest.fixture(scope="module")
def without_v1(simulator, tmp_path_factory):
    """A gateway whose XAI_BASE_URL lacks the `/v1` the simulator (like xAI) serves under."""
    keys = tmp_path_factory.mktemp("nov1") / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    env = gateway_env(simulator, str(keys), XAI_BASE_URL=simulator.url)
    with running(start_gateway(env)) as proc:
        wait_for(lambda: httpx.get(f"{proc.url}/readyz").json()["upstream"] != "checking")
        yield proc


def test_a_base_url_without_v1_is_a_502_that_says_the_gateway_is_misconfigured(without_v1):
    response = httpx.post(f"{without_v1.url}/api/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and "misconfigured" in error["message"]
    assert "XAI_BASE_URL" in error["message"]


def test_once_known_a_wrong_base_url_spends_no_request_unit_and_calls_no_upstream(
    without_v1, simulator
):
    httpx.post(f"{without_v1.url}/api/v1/chat/completions", json=CHAT, headers=AUTH)
    before = requests_today(without_v1)
    seen = httpx.get(f"{simulator.url}/sim/stats").json()["requests"]
    refused = [
        httpx.post(f"{without_v1.url}/api/v1/chat/completions", json=CHAT, headers=AUTH)
        for _ in range(3)
    ]
    assert [r.status_code for r in refused] == [502] * 3
    assert requests_today(without_v1) == before
    assert httpx.get(f"{simulator.url}/sim/stats").json()["requests"] == seen


def test_the_redis_unreachable_warning_names_host_and_port(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    port = free_port()  # nothing listens there
    env = gateway_env(simulator, str(keys), REDIS_URL=f"redis://127.0.0.1:{port}/0")
    with running(start_gateway(env)) as proc:
        wait_for(lambda: "redis unreachable" in proc.read_output())
        line = next(x for x in proc.read_output().splitlines() if "redis unreachable" in x)
    assert f"127.0.0.1:{port}" in line


def test_readyz_says_when_the_key_file_on_disk_failed_to_reload(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    env = gateway_env(simulator, str(keys), GATEWAY_KEYS_RELOAD_SECONDS="0.1")
    with running(start_gateway(env)) as proc:

        def keys_file() -> str:
            return httpx.get(f"{proc.url}/readyz").json()["keys_file"]

        assert keys_file() == "ok"
        keys.write_text("[[keys]]\nid = broken")
        wait_for(lambda: keys_file() != "ok")
        broken = httpx.get(f"{proc.url}/readyz")
        keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)) + "\n")
        wait_for(lambda: keys_file() == "ok")
    assert broken.status_code == 200  # the previous keys still serve
    assert "failed to reload" in broken.json()["keys_file"]


def test_the_simulator_prints_where_it_listens(simulator):
    first = simulator.read_output().splitlines()[0]
    assert first == f"simulated xAI API listening on http://127.0.0.1:{simulator.port}/v1"
