"""What a new user meets (SPEC 14): `models.retrieve`, OpenAI's `/v1` base path, a demo key
kept across restarts, a port in use, and stored responses reachable with spent budgets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import openai
import pytest

from tests.support.keyfiles import MAIN_SECRET, MODEL, MODELS_SECRET, key_entry, keys_toml
from tests.support.processes import REPO, free_port, gateway_env, start_gateway

AUTH = {"Authorization": f"Bearer {MAIN_SECRET}"}
MESSAGES = [{"role": "user", "content": "Hello"}]


def sdk(url: str, secret: str = MAIN_SECRET) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=url, max_retries=0)


# --- GET /api/v1/models/{id} ---------------------------------------------------------------


def test_models_retrieve_answers_the_model_object(gateway):
    model = sdk(f"{gateway.url}/api/v1").models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "xai")


def test_an_unknown_model_id_is_404_model_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(f"{gateway.url}/api/v1").models.retrieve("grok-no-such-model")
    assert caught.value.body["code"] == "model_not_found"


def test_a_model_the_key_may_not_use_is_404_and_spends_nothing(gateway):
    headers = {"Authorization": f"Bearer {MODELS_SECRET}"}
    before = httpx.get(f"{gateway.url}/api/v1/models/{MODEL}", headers=headers)
    refused = httpx.get(f"{gateway.url}/api/v1/models/grok-4", headers=headers)
    after = httpx.get(f"{gateway.url}/api/v1/models/{MODEL}", headers=headers)
    assert before.status_code == after.status_code == 200
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    spent = int(before.headers["x-ratelimit-remaining-requests"]) - int(
        after.headers["x-ratelimit-remaining-requests"]
    )
    assert spent == 1  # the second allowed request only


def test_an_alias_is_retrieved_under_its_own_name(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    aliases = '[models.aliases]\n"grok-old-name" = "grok-4"\n'
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)) + aliases)
    gw = start_gateway(gateway_env(simulator, str(keys)))
    try:
        model = sdk(f"{gw.url}/api/v1").models.retrieve("grok-old-name")
    finally:
        gw.stop()
    assert (model.id, model.object) == ("grok-old-name", "model")


# --- /v1 serves the same API ---------------------------------------------------------------


def test_the_openai_base_path_serves_chat(gateway):
    completion = sdk(f"{gateway.url}/v1").chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content


def test_the_openai_base_path_serves_the_same_answers_as_api_v1(gateway):
    for path in ("models", f"models/{MODEL}", "usage"):
        aliased = httpx.get(f"{gateway.url}/v1/{path}", headers=AUTH)
        direct = httpx.get(f"{gateway.url}/api/v1/{path}", headers=AUTH)
        assert aliased.status_code == direct.status_code == 200, path
        assert aliased.json().keys() == direct.json().keys()


def test_an_unknown_path_under_v1_is_404_not_found(gateway):
    response = httpx.get(f"{gateway.url}/v1/no-such-thing", headers=AUTH)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# --- the demo: its key, and a port in use ----------------------------------------------------


def start_demo(port: int, **env: str) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "XAI_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "service", "--demo"],
        env={**base, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        assert proc.poll() is None, proc.stdout.read()
        try:
            httpx.get(f"{url}/healthz", timeout=0.5)
            return
        except httpx.HTTPError:
            subprocess.run(["sleep", "0.05"])
    raise TimeoutError(url)


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=15)
    return out


def test_a_restarted_demo_keeps_the_key_from_gateway_demo_key():
    port, key = free_port(), "gk-demo-kept-across-restarts"
    statuses, outputs = [], []
    for _ in range(2):
        demo = start_demo(port, GATEWAY_DEMO_KEY=key)
        try:
            wait_ready(f"http://127.0.0.1:{port}", demo)
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/models",
                headers={"Authorization": f"Bearer {key}"},
            )
            statuses.append(response.status_code)
        finally:
            outputs.append(stop(demo))
    assert statuses == [200, 200]
    assert all(f"demo key : {key}" in out for out in outputs)


def test_a_bad_gateway_demo_key_stops_start_up_with_exit_2():
    done = subprocess.run(
        [sys.executable, "-m", "service", "--demo"],
        env={**os.environ, "GATEWAY_PORT": str(free_port()), "GATEWAY_DEMO_KEY": "a b"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "GATEWAY_DEMO_KEY" in done.stderr


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("mode", ["demo", "gateway"])
def test_a_port_in_use_stops_start_up_before_any_banner_with_exit_2(mode, taken_port, tmp_path):
    env = {**os.environ, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(taken_port)}
    args = [sys.executable, "-m", "service"]
    if mode == "demo":
        args.append("--demo")
    else:
        keys = tmp_path / "keys.toml"
        keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
        env.update(XAI_API_KEY="xai-test", GATEWAY_KEYS_FILE=str(keys))
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""  # no banner, no key
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(taken_port) in lines[0] and "GATEWAY_PORT" in lines[0]


# --- stored responses with spent budgets -----------------------------------------------------


@pytest.fixture(scope="module")
def broke(simulator, tmp_path_factory):
    """A gateway whose keys spend their token or spend budget on one response."""
    keys = tmp_path_factory.mktemp("broke") / "keys.toml"
    keys.write_text(
        keys_toml(
            key_entry("tokens", "gk-test-tokens-0123456789", 'tokens = "5/hour"'),
            key_entry("spend", "gk-test-spend-0123456789", 'spend = "0.0000001/day"'),
            key_entry("reader", "gk-test-reader-0123456789", 'tokens = "100000/hour"'),
        )
    )
    proc = start_gateway(gateway_env(simulator, str(keys)))
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    ("secret", "code"),
    [
        ("gk-test-tokens-0123456789", "tokens_limit_exceeded"),
        ("gk-test-spend-0123456789", "spend_limit_exceeded"),
    ],
)
def test_a_tenant_out_of_budget_still_reads_and_deletes_its_stored_response(broke, secret, code):
    headers = {"Authorization": f"Bearer {secret}"}
    created = httpx.post(
        f"{broke.url}/api/v1/responses", json={"model": MODEL, "input": "Hi"}, headers=headers
    )
    assert created.status_code == 200
    response_id = created.json()["id"]
    again = httpx.post(
        f"{broke.url}/api/v1/responses", json={"model": MODEL, "input": "Hi"}, headers=headers
    )
    assert again.status_code == 429 and again.json()["error"]["code"] == code
    url = f"{broke.url}/api/v1/responses/{response_id}"
    read = httpx.get(url, headers=headers)
    deleted = httpx.delete(url, headers=headers)
    assert (read.status_code, deleted.status_code) == (200, 200)
    assert read.json()["id"] == response_id


def test_reading_a_stored_response_counts_one_request_and_no_tokens(broke):
    headers = {"Authorization": "Bearer gk-test-reader-0123456789"}
    created = httpx.post(
        f"{broke.url}/api/v1/responses", json={"model": MODEL, "input": "Hi"}, headers=headers
    )
    assert created.status_code == 200
    url = f"{broke.url}/api/v1/responses/{created.json()['id']}"
    before = httpx.get(f"{broke.url}/api/v1/usage", headers=headers).json()["usage"]["key"]
    reads = [httpx.get(url, headers=headers) for _ in range(2)]
    after = httpx.get(f"{broke.url}/api/v1/usage", headers=headers).json()["usage"]["key"]
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in reads]
    assert remaining[0] - remaining[1] == 1
    assert after["today"]["requests"] - before["today"]["requests"] == 2
    for kind in ("input_tokens", "output_tokens", "cost_usd"):
        assert after["today"][kind] == before["today"][kind], kind
