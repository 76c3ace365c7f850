"""Several upstreams (SPEC 11) with real processes: simulators that each accept only their own
key (`--api-key`: any other key gets xAI's 400), gateways configured by `[[upstreams]]`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.doc_examples import examples_in
from tests.support.keyfiles import MODEL, key_entry
from tests.support.processes import (
    REPO,
    Proc,
    free_port,
    gateway_env,
    start_gateway,
    start_simulator,
)

KEYS = {"us": "xai-key-us", "us2": "xai-key-us2", "eu": "xai-key-eu"}
ENV = {"XAI_KEY_US": KEYS["us"], "XAI_KEY_US2": KEYS["us2"], "XAI_KEY_EU": KEYS["eu"]}
ACME = "gk-acme-upstreams-0123456789"  # tenant acme: pinned to eu
BETA = "gk-beta-upstreams-0123456789"  # tenant beta: the default pool (us, us2)
GAMMA = "gk-gamma-upstreams-0123456789"  # tenant gamma: the default pool too
CLIENT_HEADERS = {"x-custom": "secret-ish", "cookie": "a=b", "openai-organization": "org-1"}
SENT_UPSTREAM = {
    "host",
    "authorization",
    "user-agent",
    "accept-encoding",
    "accept",
    "content-type",
    "content-length",
    "x-grok-conv-id",
}


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, Proc]]:
    procs = {name: start_simulator("--api-key", key) for name, key in KEYS.items()}
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture
def fresh(sims: dict[str, Proc]) -> dict[str, Proc]:
    for proc in sims.values():
        httpx.post(f"{proc.url}/sim/reset")
    return sims


def upstream(name: str, url: str, env: str, pool: bool = True) -> str:
    return (
        f'[[upstreams]]\nname = "{name}"\nbase_url = "{url}/v1"\napi_key_env = "{env}"\n'
        f"pool = {'true' if pool else 'false'}\n"
    )


def key_file(sims: dict[str, Proc], extra_upstreams: str = "") -> str:
    return (
        '[defaults]\nrequests = "100000/minute"\n\n'
        + upstream("us", sims["us"].url, "XAI_KEY_US")
        + upstream("us2", sims["us2"].url, "XAI_KEY_US2")
        + upstream("eu", sims["eu"].url, "XAI_KEY_EU", pool=False)
        + extra_upstreams
        + '[tenants.acme]\nupstreams = ["eu"]\n\n'
        + key_entry("acme-prod", ACME, tenant="acme")
        + key_entry("beta-prod", BETA, tenant="beta")
        + key_entry("gamma-prod", GAMMA, tenant="gamma")
    )


StartGateway = Callable[..., Proc]


@pytest.fixture(scope="module")
def launch(sims, tmp_path_factory) -> Iterator[StartGateway]:
    """Start a gateway on the simulators (stopped at the end of the module)."""
    started: list[Proc] = []

    def start(extra_upstreams: str = "", **env: str) -> Proc:
        path = tmp_path_factory.mktemp("keys") / "keys.toml"
        path.write_text(key_file(sims, extra_upstreams))
        settings = {**ENV, "GATEWAY_KEYS_RELOAD_SECONDS": "0.2", **env}
        proc = start_gateway(gateway_env(sims["us"], str(path), **settings))
        proc.keys_path = path  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def gw(launch) -> Proc:
    """The gateway the tests that mark no upstream out of credits share."""
    return launch()


def chat(gw: Proc, secret: str, *messages: str, stream=False, headers=None, sim=None):
    body: dict = {
        "model": MODEL,
        "messages": [{"role": "user", "content": m} for m in messages or ("hello there",)],
    }
    if stream:
        body["stream"] = True
    if sim:
        body["sim"] = sim
    return httpx.post(
        f"{gw.url}/api/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}", **(headers or {})},
        timeout=30,
    )


def stats(sim: Proc) -> dict:
    return httpx.get(f"{sim.url}/sim/stats").json()


def answer(sim: Proc, kind: str | None) -> None:
    httpx.post(f"{sim.url}/sim/answer", json={"answer": kind}).raise_for_status()


def access_lines(gw: Proc) -> list[dict]:
    lines = []
    for line in gw.read_output().splitlines():
        if '"logger":"access"' in line:
            lines.append(json.loads(line))
    return lines


def last_access(gw: Proc) -> dict:
    lines = access_lines(gw)
    return lines[-1] if lines else {}


def readyz_upstreams(gw: Proc) -> dict[str, str]:
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 200
    return ready.json()["upstreams"]


def gauges(gw: Proc) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{gw.url}/metrics").text.splitlines():
        if line.startswith("gateway_upstream_up{"):
            name = line.split('upstream="', 1)[1].split('"', 1)[0]
            found[name] = float(line.split()[-1])
    return found


def wait_for(check: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# Regions and keys


def test_a_tenant_pinned_to_a_region_reaches_only_that_region(gw, fresh):
    for _ in range(4):
        assert chat(gw, ACME).status_code == 200
    assert stats(fresh["eu"])["chat_requests"] == 4
    assert stats(fresh["us"])["chat_requests"] == stats(fresh["us2"])["chat_requests"] == 0


def test_the_default_pool_spreads_conversations_and_leaves_out_one_not_in_it(gw, fresh):
    for i in range(10):
        assert chat(gw, BETA, f"conversation {i}").status_code == 200
    counts = [stats(fresh[name])["chat_requests"] for name in ("us", "us2")]
    assert sum(counts) == 10 and min(counts) >= 2
    assert stats(fresh["eu"])["chat_requests"] == 0


def test_every_turn_of_a_conversation_goes_to_one_upstream(gw, fresh):
    for turn in range(1, 7):
        messages = [f"same opening {turn}" if i else "same opening" for i in range(turn)]
        assert chat(gw, BETA, *messages).status_code == 200
    counts = sorted(stats(fresh[name])["chat_requests"] for name in ("us", "us2"))
    assert counts == [0, 6]


def test_requests_without_a_conversation_spread_by_requests_in_flight(launch, fresh):
    gateway = launch(GATEWAY_CACHE_AFFINITY="off")
    for _ in range(6):
        assert chat(gateway, BETA).status_code == 200
    assert stats(fresh["us"])["chat_requests"] == stats(fresh["us2"])["chat_requests"] == 3


def test_each_upstream_receives_only_its_own_key(gw, fresh):
    assert chat(gw, ACME).status_code == 200
    for i in range(6):
        assert chat(gw, BETA, f"conversation {i}").status_code == 200
    for name, sim in fresh.items():
        seen = stats(sim)["last_request"]["headers"]["authorization"]
        assert seen == f"Bearer {KEYS[name]}"


def test_no_client_header_but_the_conversation_id_reaches_the_upstream(gw, fresh):
    response = chat(gw, ACME, headers={**CLIENT_HEADERS, "x-grok-conv-id": "conv-1"})
    assert response.status_code == 200
    seen = stats(fresh["eu"])["last_request"]["headers"]
    assert set(seen) == SENT_UPSTREAM
    assert seen["x-grok-conv-id"].endswith("-conv-1") and seen["x-grok-conv-id"] != "conv-1"


def test_the_access_log_names_the_upstream(gw, fresh):
    chat(gw, ACME)
    assert wait_for(lambda: last_access(gw).get("upstream") == "eu")


def test_readyz_and_the_gauge_name_every_upstream(gw):
    assert wait_for(lambda: readyz_upstreams(gw) == {"us": "ok", "us2": "ok", "eu": "ok"})
    assert gauges(gw) == {"us": 1.0, "us2": 1.0, "eu": 1.0}


# Failures stepped around before the first byte, never after


@pytest.mark.parametrize("kind", ["rate_limited", "server_error"])
def test_a_rate_limited_or_failing_upstream_is_stepped_around_before_the_first_byte(
    gw, fresh, kind
):
    answer(fresh["us"], kind)
    try:
        replies = [chat(gw, BETA, f"conversation {i}", stream=i % 2 == 1) for i in range(4)]
    finally:
        answer(fresh["us"], None)
    assert [r.status_code for r in replies] == [200] * 4
    assert stats(fresh["us2"])["chat_requests"] == 4
    assert stats(fresh["us"])["refused_requests"] >= 1


def test_a_tenant_with_one_upstream_gets_its_rate_limit_with_retry_after(gw, fresh):
    answer(fresh["eu"], "rate_limited")
    try:
        response = chat(gw, ACME)
    finally:
        answer(fresh["eu"], None)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "upstream_rate_limited"
    assert response.headers["retry-after"] == "7"
    assert stats(fresh["eu"])["refused_requests"] == 1


def test_a_stream_that_fails_after_its_first_byte_is_not_sent_again(gw, fresh):
    response = chat(gw, BETA, stream=True, sim={"fault": "drop", "fault_after": 2})
    assert response.status_code == 200
    assert b'"error": "API error' in response.content or b'"error":"API error' in response.content
    sent = stats(fresh["us"])["chat_requests"] + stats(fresh["us2"])["chat_requests"]
    assert sent == 1


def test_an_unreachable_upstream_is_stepped_around(launch, fresh):
    dead = upstream("dead", f"http://127.0.0.1:{free_port()}", "XAI_KEY_US")
    gateway = launch(dead)
    replies = [chat(gateway, GAMMA, f"conversation {i}") for i in range(4)]
    assert [r.status_code for r in replies] == [200] * 4
    assert {line["upstream"] for line in access_lines(gateway)} <= {"us", "us2"}


# Out of credits


def test_an_upstream_out_of_credits_is_named_at_once_and_sent_nothing_for_a_minute(launch, fresh):
    gateway = launch()
    answer(fresh["us"], "no_credits")
    try:
        replies = [chat(gateway, BETA, f"conversation {i}") for i in range(6)]
        upstreams = readyz_upstreams(gateway)
        metrics = gauges(gateway)
    finally:
        answer(fresh["us"], None)
    assert [r.status_code for r in replies] == [200] * 6
    assert stats(fresh["us"])["refused_requests"] == 1  # the one that said so, then nothing
    assert stats(fresh["us2"])["chat_requests"] == 6
    assert upstreams["us"] == "out of credits" and upstreams["us2"] == "ok"
    assert metrics["us"] == 0.0 and metrics["us2"] == 1.0
    for i in range(3):  # the simulator has credits again; the minute has not passed
        assert chat(gateway, BETA, f"conversation {i}").status_code == 200
    assert stats(fresh["us"])["chat_requests"] == 0
    lines = [line for line in gateway.read_output().splitlines() if "out of credits" in line]
    assert len(lines) == 1


def test_with_every_upstream_out_of_credits_the_client_gets_503_not_to_retry(launch, fresh):
    gateway = launch()
    answer(fresh["eu"], "no_credits")
    try:
        first = chat(gateway, ACME)
        second = chat(gateway, ACME)
    finally:
        answer(fresh["eu"], None)
    for response in (first, second):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_quota_exhausted"
        assert response.headers["x-should-retry"] == "false"
    assert stats(fresh["eu"])["refused_requests"] == 1  # the second was never sent
    usage = httpx.get(
        f"{gateway.url}/api/v1/usage", headers={"Authorization": f"Bearer {ACME}"}
    ).json()
    assert usage["usage"]["key"]["today"]["cost_usd"] == 0
    assert usage["usage"]["key"]["today"]["input_tokens"] == 0


# Stored responses stay with their upstream


def create_response(gw: Proc, secret: str, **fields) -> str:
    response = httpx.post(
        f"{gw.url}/api/v1/responses",
        json={"model": MODEL, **fields},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


@pytest.fixture(params=["memory", "redis"])
def stores_gw(request, launch, gw):
    if request.param == "memory":
        return gw
    redis_server = request.getfixturevalue("redis_server")
    return launch(REDIS_URL=redis_server.url)


def test_stored_responses_are_read_continued_and_deleted_on_their_upstream(stores_gw, fresh):
    auth = {"Authorization": f"Bearer {BETA}"}
    ids = [create_response(stores_gw, BETA, input=f"remember {i}") for i in range(8)]
    made_on = {n: stats(fresh[n])["stored_responses"] for n in ("us", "us2")}
    assert sum(made_on.values()) == 8 and min(made_on.values()) > 0  # spread over both
    for response_id in ids:
        for _ in range(2):
            got = httpx.get(f"{stores_gw.url}/api/v1/responses/{response_id}", headers=auth)
            assert got.status_code == 200 and got.json()["id"] == response_id
    continued = [
        create_response(stores_gw, BETA, input="and then?", previous_response_id=i) for i in ids
    ]
    doubled = {n: 2 * made for n, made in made_on.items()}
    assert {n: stats(fresh[n])["stored_responses"] for n in ("us", "us2")} == doubled
    for response_id in ids + continued:
        gone = httpx.delete(f"{stores_gw.url}/api/v1/responses/{response_id}", headers=auth)
        assert gone.status_code == 200
    assert stats(fresh["us"])["stored_responses"] == stats(fresh["us2"])["stored_responses"] == 0


# Cache affinity and what it saves


def turns(gw: Proc, secret: str, n: int, headers=None) -> list[dict]:
    """`n` turns of one conversation; each turn's usage."""
    messages = [{"role": "system", "content": "You answer in one short paragraph."}]
    usages = []
    for i in range(n):
        messages.append({"role": "user", "content": f"Question number {i}: tell me more."})
        response = httpx.post(
            f"{gw.url}/api/v1/chat/completions",
            json={"model": MODEL, "messages": messages},
            headers={"Authorization": f"Bearer {secret}", **(headers or {})},
        )
        assert response.status_code == 200
        doc = response.json()
        messages.append(doc["choices"][0]["message"])
        usages.append(doc["usage"])
    return usages


def test_a_conversation_is_billed_for_cached_input_where_it_was_billed_in_full(launch, fresh):
    with_affinity = turns(launch(), GAMMA, 3)
    without = turns(launch(GATEWAY_CACHE_AFFINITY="off"), GAMMA, 3)
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in without] == [0, 0, 0]
    cached = [u["prompt_tokens_details"]["cached_tokens"] for u in with_affinity]
    assert cached[0] == 0 and all(c > 0 for c in cached[1:])
    for on, off in zip(with_affinity[1:], without[1:], strict=True):
        assert on["prompt_tokens"] == off["prompt_tokens"]
        assert on["cost_in_usd_ticks"] < off["cost_in_usd_ticks"]


def test_cached_tokens_show_in_the_access_log_and_the_usage_ratio(launch, fresh):
    gateway = launch()
    usages = turns(gateway, GAMMA, 2)
    cached = usages[1]["prompt_tokens_details"]["cached_tokens"]
    assert wait_for(lambda: last_access(gateway).get("cached_tokens") == cached)
    usage = httpx.get(
        f"{gateway.url}/api/v1/usage", headers={"Authorization": f"Bearer {GAMMA}"}
    ).json()["usage"]["key"]["today"]
    inputs = sum(u["prompt_tokens"] for u in usages)
    assert usage["cache_hit_ratio"] == round(cached / inputs, 4)


def test_a_responses_conversation_is_billed_for_cached_input_on_its_second_turn(gw, fresh):
    def respond(items) -> dict:
        response = httpx.post(
            f"{gw.url}/api/v1/responses",
            json={"model": MODEL, "instructions": "Be brief.", "input": items, "store": False},
            headers={"Authorization": f"Bearer {ACME}"},
        )
        assert response.status_code == 200
        return response.json()["usage"]

    first = respond("What is a mole in chemistry?")
    second = respond(
        [
            {"role": "user", "content": "What is a mole in chemistry?"},
            {"role": "assistant", "content": "A unit of amount."},
            {"role": "user", "content": "Of what?"},
        ]
    )
    assert stats(fresh["eu"])["last_request"]["headers"]["x-grok-conv-id"]
    assert first["input_tokens_details"]["cached_tokens"] == 0
    assert second["input_tokens_details"]["cached_tokens"] > 0


def test_with_affinity_off_no_conversation_id_is_made_up(launch, fresh):
    gateway = launch(GATEWAY_CACHE_AFFINITY="off")
    assert chat(gateway, ACME).status_code == 200
    assert "x-grok-conv-id" not in stats(fresh["eu"])["last_request"]["headers"]


def test_a_malformed_conversation_id_is_400_and_spends_nothing(gw, fresh):
    response = chat(gw, BETA, headers={"x-grok-conv-id": "x" * 129})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-grok-conv-id"
    assert stats(fresh["us"])["chat_requests"] == stats(fresh["us2"])["chat_requests"] == 0


# The key file: bad references stop start-up or a reload


def run_gateway(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "XAI_"))}
    base.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "service"],
        env={**base, "GATEWAY_PORT": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    ("drop_env", "tenant_line", "fragment"),
    [
        ("XAI_KEY_EU", "", "XAI_KEY_EU is not set"),
        (None, 'upstreams = ["ap"]', "'ap'"),
        (None, "upstreams = []", "empty"),
    ],
)
def test_a_bad_reference_stops_start_up_with_one_line(
    sims, tmp_path, drop_env, tenant_line, fragment
):
    text = key_file(sims).replace('upstreams = ["eu"]', tenant_line or 'upstreams = ["eu"]')
    path = tmp_path / "keys.toml"
    path.write_text(text)
    env = {**ENV, "XAI_API_KEY": "unused", "GATEWAY_KEYS_FILE": str(path)}
    env.pop(drop_env or "", None)
    done = run_gateway(env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and str(path) in lines[0]
    assert "Traceback" not in done.stderr


def test_a_reload_follows_the_file_and_refuses_a_bad_reference(launch, fresh):
    gateway = launch()
    path: Path = gateway.keys_path  # type: ignore[attr-defined]
    path.write_text(key_file(fresh).replace('upstreams = ["eu"]', 'upstreams = ["mars"]'))
    assert wait_for(lambda: "'mars'" in gateway.read_output())
    assert chat(gateway, ACME).status_code == 200
    assert stats(fresh["eu"])["chat_requests"] == 1  # the old registry is in force
    path.write_text(key_file(fresh).replace('upstreams = ["eu"]', 'upstreams = ["us2"]'))

    def lands_on_us2() -> bool:
        before = stats(fresh["us2"])["chat_requests"]
        assert chat(gateway, ACME).status_code == 200
        return stats(fresh["us2"])["chat_requests"] == before + 1

    assert wait_for(lands_on_us2)
    eu_before = stats(fresh["eu"])["chat_requests"]
    assert lands_on_us2()
    assert stats(fresh["eu"])["chat_requests"] == eu_before


# The docs' examples that need several upstreams


def run_example(example, env: dict[str, str], cwd: Path) -> str:
    if example.lang == "python":
        command = [sys.executable, "-c", example.code]
    else:
        command = ["bash", "-c", example.code]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=cwd)
    assert done.returncode == 0, f"{example.name}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_upstreams_docs_examples_run_as_written(launch, fresh, tmp_path):
    gateway = launch()
    mine = "tests/integration/test_upstreams.py"
    readyz, conversation, own_id = [
        e for e in examples_in("docs/upstreams.md") if e.tested_by == mine
    ]
    env = {**os.environ, "GATEWAY_URL": gateway.url, "GROK_GATEWAY_KEY": GAMMA}
    assert wait_for(lambda: "'us2': 'ok'" in run_example(readyz, env, tmp_path))
    assert run_example(readyz, env, tmp_path).strip() == str({"us": "ok", "us2": "ok", "eu": "ok"})
    first, second = run_example(conversation, env, tmp_path).splitlines()
    assert first.startswith("turn 1: 0 of ")
    assert second.startswith("turn 2: ") and not second.startswith("turn 2: 0 of")
    answer = json.loads(run_example(own_id, env, tmp_path))
    assert answer["object"] == "chat.completion"
    seen = [stats(fresh[n])["last_request"] for n in ("us", "us2")]
    ids = [r["headers"].get("x-grok-conv-id", "") for r in seen if r]
    assert any(i.endswith("-ticket-4711") for i in ids)
