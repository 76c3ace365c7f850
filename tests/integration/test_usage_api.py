"""GET /api/v1/usage: a key's budgets and usage, read from a real gateway on a real Redis."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import openai
import pytest

from tests.support.keyfiles import key_entry
from tests.support.processes import gateway_env, start_gateway, start_redis
from tests.support.usage import (
    MEASURES,
    MODEL,
    PRICES_TOML,
    add,
    admin_entry,
    as_shown,
    chat,
    eventually,
    exact_json,
    measured,
)

ADMIN = "gk-admin-usage-api-0123456789"
SECRETS = {
    "shape": "gk-usage-shape",
    "prod": "gk-usage-prod",
    "batch": "gk-usage-batch",
    "reader": "gk-usage-reader",
    "solo": "gk-usage-solo",
    "poller": "gk-usage-poller",
    "looper": "gk-usage-looper",
    "broke": "gk-usage-broke",
    "broke-sdk": "gk-usage-broke-sdk",
}

KEYS_TOML = f"""
[defaults]
requests = "1000/minute"

[tenants.acme]
requests = "5000/minute"
spend = "500/month"

{PRICES_TOML}

{
    key_entry(
        "shape",
        SECRETS["shape"],
        tenant="shape-co",
        extra='''requests = "600/minute;10000/day"
tokens = "1000000/day"
concurrent = 4
spend = "25/day"''',
    )
}
{key_entry("prod", SECRETS["prod"], tenant="acme", extra='requests = "10000/day"')}
{key_entry("batch", SECRETS["batch"], tenant="acme")}
{key_entry("reader", SECRETS["reader"], extra='requests = "2/day"')}
{key_entry("solo", SECRETS["solo"])}
{key_entry("poller", SECRETS["poller"], extra='requests = "5/hour"')}
{key_entry("looper", SECRETS["looper"])}
{key_entry("broke", SECRETS["broke"], extra='spend = "0.0000000001/day"')}
{key_entry("broke-sdk", SECRETS["broke-sdk"], extra='spend = "0.0000000001/day"')}
{admin_entry("ops", ADMIN)}
"""


@pytest.fixture(scope="module")
def redis():
    """A Redis of the module's own: tenant sums are per tenant name, and other modules have
    tenants called acme too."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(simulator, redis, tmp_path_factory):
    keys = tmp_path_factory.mktemp("usage-api") / "keys.toml"
    keys.write_text(KEYS_TOML)
    proc = start_gateway(gateway_env(simulator, str(keys), REDIS_URL=redis.url))
    yield proc
    proc.stop()


def usage(gw, key: str) -> httpx.Response:
    """The key's usage, read as a polite client would: after a 429, again after Retry-After."""
    while True:
        response = httpx.get(
            f"{gw.url}/api/v1/usage",
            headers={"Authorization": f"Bearer {SECRETS[key]}"},
            timeout=10,
        )
        if response.status_code != 429:
            return response
        time.sleep(int(response.headers["retry-after"]))


def limits_by(doc: dict) -> dict[tuple[str, str, object], dict]:
    return {(lim["scope"], lim["kind"], lim["limit"]): lim for lim in doc["limits"]}


def test_usage_answers_the_documented_shape(gw):
    response = usage(gw, "shape")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = exact_json(response)
    assert set(doc) == {"object", "key_id", "tenant", "limits", "usage"}
    assert (doc["object"], doc["key_id"], doc["tenant"]) == ("usage", "shape", "shape-co")
    for limit in doc["limits"]:
        assert set(limit) == {"scope", "kind", "window", "limit", "remaining", "reset_seconds"}
    assert {(lim["scope"], lim["kind"]) for lim in doc["limits"]} == {
        ("key", "requests"),
        ("key", "tokens"),
        ("key", "spend"),
        ("key", "concurrent"),
    }
    assert set(doc["usage"]) == {"key", "tenant"}
    for scope in ("key", "tenant"):
        assert set(doc["usage"][scope]) == {"today", "month"}
        for period in ("today", "month"):
            assert list(doc["usage"][scope][period]) == [*MEASURES, "cache_hit_ratio"]


def test_usage_shows_spend_in_usd_and_concurrency_without_a_window(gw):
    doc = exact_json(usage(gw, "shape"))
    by = limits_by(doc)
    spend = by[("key", "spend", Decimal("25.0"))]
    assert spend["remaining"] == Decimal("25.0")
    assert spend["reset_seconds"] is not None and 0 < spend["reset_seconds"] <= 86400
    concurrent = by[("key", "concurrent", 4)]
    assert concurrent == {
        "scope": "key",
        "kind": "concurrent",
        "window": None,
        "limit": 4,
        "remaining": 4,
        "reset_seconds": None,
    }
    assert by[("key", "requests", 600)]["window"] != by[("key", "requests", 10000)]["window"]


def test_usage_counts_what_the_key_and_its_tenant_used(gw):
    expected_key: dict[str, int] = {}
    expected_tenant: dict[str, int] = {}
    for content in ("hi", "tell me a story", "three little words"):
        response = chat(gw.url, SECRETS["prod"], content)
        assert response.status_code == 200
        expected_key = add(expected_key, measured(response.json()["usage"]))
    other = chat(gw.url, SECRETS["batch"], "a longer prompt for the other key")
    expected_tenant = add(expected_key, measured(other.json()["usage"]))

    doc = eventually(
        lambda: exact_json(usage(gw, "prod")),
        lambda d: d["usage"]["tenant"]["today"]["requests"] == 4,
    )
    assert doc["usage"]["key"]["today"] == as_shown(expected_key)
    assert doc["usage"]["key"]["month"] == as_shown(expected_key)
    assert doc["usage"]["tenant"]["today"] == as_shown(expected_tenant)
    by = limits_by(doc)
    assert by[("key", "requests", 10000)]["remaining"] == 10000 - 3
    assert by[("tenant", "requests", 5000)]["scope"] == "tenant"
    tenant_spend = by[("tenant", "spend", Decimal("500.0"))]
    spent = Decimal(expected_tenant["cost_ticks"]) / 10**10
    assert tenant_spend["remaining"] == Decimal(500) - spent


def test_usage_spends_nothing_and_is_not_in_the_ledger(gw):
    # 'reader' may make two requests a day; reading its usage is not one of them.
    for _ in range(5):
        assert usage(gw, "reader").status_code == 200
    assert [chat(gw.url, SECRETS["reader"]).status_code for _ in range(2)] == [200, 200]
    doc = eventually(
        lambda: usage(gw, "reader").json(), lambda d: d["usage"]["key"]["today"]["requests"] == 2
    )
    assert doc["usage"]["key"]["today"]["requests"] == 2
    [day] = [lim for lim in doc["limits"] if lim["kind"] == "requests"]
    assert day["remaining"] == 0


def test_usage_answers_when_the_spend_budget_is_spent(gw):
    assert chat(gw.url, SECRETS["broke"]).status_code == 200
    refused = eventually(
        lambda: chat(gw.url, SECRETS["broke"]), lambda r: r.status_code == 429, timeout=3
    )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "spend_limit_exceeded"
    assert refused.headers["x-should-retry"] == "false"
    assert 1 <= int(refused.headers["retry-after"]) <= 86400

    response = usage(gw, "broke")
    assert response.status_code == 200
    [spend] = [lim for lim in exact_json(response)["limits"] if lim["kind"] == "spend"]
    assert (spend["limit"], spend["remaining"]) == (Decimal("0.0000000001"), Decimal("0.0"))


def test_key_without_tenant_reads_null_tenant_usage(gw):
    doc = usage(gw, "solo").json()
    assert doc["tenant"] is None
    assert doc["usage"]["tenant"] is None
    assert all(lim["scope"] == "key" for lim in doc["limits"])


def test_admin_key_gets_401_on_the_tenant_api(gw):
    for method, path in (("GET", "/api/v1/usage"), ("GET", "/api/v1/models")):
        response = httpx.request(
            method, f"{gw.url}{path}", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert chat(gw.url, ADMIN).status_code == 401


def test_no_key_gets_401_on_usage(gw):
    response = httpx.get(f"{gw.url}/api/v1/usage")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_usage_requests_are_in_the_access_log(gw):
    usage_response = httpx.get(
        f"{gw.url}/api/v1/usage",
        headers={"Authorization": f"Bearer {SECRETS['solo']}", "X-Request-ID": "usage-log-1"},
    )
    assert usage_response.status_code == 200
    time.sleep(0.2)
    lines = [json.loads(line) for line in gw.read_output().splitlines() if "usage-log-1" in line]
    assert len(lines) == 1
    assert lines[0]["path"] == "/api/v1/usage"
    assert (lines[0]["key_id"], lines[0]["status"]) == ("solo", 200)


def _count(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_openai_sdk_does_not_retry_a_spent_spend_budget(gw):
    assert chat(gw.url, SECRETS["broke-sdk"]).status_code == 200
    eventually(lambda: chat(gw.url, SECRETS["broke-sdk"]), lambda r: r.status_code == 429)
    series = 'gateway_requests_total{key_id="broke-sdk",status="429"}'
    before = _count(httpx.get(f"{gw.url}/metrics").text, series)

    client = openai.OpenAI(api_key=SECRETS["broke-sdk"], base_url=f"{gw.url}/api/v1", max_retries=3)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])

    assert raised.value.code == "spend_limit_exceeded"
    # One request reached the gateway: the SDK read x-should-retry: false and did not retry.
    assert _count(httpx.get(f"{gw.url}/metrics").text, series) == before + 1


def test_usage_is_read_at_most_five_times_a_second_per_key_and_spends_nothing(gw):
    headers = {"Authorization": f"Bearer {SECRETS['poller']}"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=10) as client:
        statuses = [client.get("/api/v1/usage") for _ in range(12)]
    refused = [r for r in statuses if r.status_code == 429]
    assert refused, [r.status_code for r in statuses]  # 12 reads cannot fit in 5 a second
    assert all(r.status_code in (200, 429) for r in statuses)
    assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert refused[0].headers["retry-after"] == "1"
    time.sleep(1.1)
    doc = usage(gw, "poller").json()
    [requests] = [lim for lim in doc["limits"] if lim["kind"] == "requests"]
    assert requests["remaining"] == 5  # neither the answered nor the refused reads spent any
    assert doc["usage"]["key"]["today"]["requests"] == 0


def _script_calls(redis) -> int:
    import redis as redis_py

    stats = redis_py.Redis.from_url(redis.url).info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def test_a_client_looping_on_its_429s_is_paced_to_the_permitted_rate(gw, redis):
    """Each second allows five reads (Redis answers them) and one 429 from Redis; a read
    back before its Retry-After is held until then and answered 429 by the replica alone.
    Unpaced, the loop below would make hundreds of reads (and as many Redis calls)."""
    headers = {"Authorization": f"Bearer {SECRETS['looper']}"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=10) as client:
        before = _script_calls(redis)
        statuses: list[int] = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            answer = client.get("/api/v1/usage")
            assert answer.status_code in (200, 429)
            if answer.status_code == 429:
                assert answer.headers["retry-after"] == "1"
            statuses.append(answer.status_code)
        calls = _script_calls(redis) - before
    # Two seconds touch three one-second windows at most: 5 reads, a refusal from Redis and
    # one held refusal in each.
    assert 429 in statuses and statuses.count(200) <= 15, statuses
    assert len(statuses) <= 21, statuses
    assert calls <= 18, calls
