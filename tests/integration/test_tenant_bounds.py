"""What one tenant cannot do to the others through the ledger, the export and spend (SPEC 15):
its model names are bounded, a refused model's name is not kept, a large export streams, spend
budgets hold through an outage and hold each request's estimate. Both stores (memory, and a
real redis-server) and real gateways."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import UTC, datetime

import pytest

from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy, parse_rates
from service.limiter.redis_store import RedisLimiter
from service.redis.connection import connect
from service.usage.ledger import MODELS_PER_DAY, OTHER_MODEL
from tests.support.charges import charge, ledger_of


def policy(key: str, tenant: str | None) -> LimitPolicy:
    return LimitPolicy(key_id=key, tenant=tenant, requests=parse_rates("100000/hour"))


@pytest.fixture(params=["memory", "redis"])
async def limiter(request):
    if request.param == "memory":
        yield MemoryLimiter()
        return
    server = request.getfixturevalue("redis_server")
    store = RedisLimiter(connect(server.url))
    yield store
    await store.aclose()


async def release(limiter, p: LimitPolicy, model: str, cost: int = 1) -> None:
    await limiter.release(p, await limiter.admit(p), charge(10, cost, model=model))


async def models_of(limiter, tenant: str) -> dict[str, int]:
    """The tenant's requests today per model, over all of its keys."""
    today = datetime.now(UTC).date()
    counts: dict[str, int] = {}
    for row in await ledger_of(limiter).rows(today, today, tenant=tenant):
        counts[row.model] = counts.get(row.model, 0) + row.totals.requests
    return counts


async def test_a_tenants_day_keeps_100_model_names_and_sums_the_rest_under_other(limiter):
    tenant = f"inflater-{uuid.uuid4().hex[:8]}"
    a, b = policy("a", tenant), policy("b", tenant)
    for n in range(MODELS_PER_DAY + 30):
        await release(limiter, a if n % 2 else b, f"made-up-{n}")
    await release(limiter, a, "-")  # requests that name no model are not counted as a name
    await release(limiter, a, "made-up-0")  # a name it already has stays its own
    counts = await models_of(limiter, tenant)
    assert len(set(counts) - {"-", OTHER_MODEL}) == MODELS_PER_DAY
    assert counts[OTHER_MODEL] == 30
    assert (counts["-"], counts["made-up-0"]) == (1, 2)
    assert sum(counts.values()) == MODELS_PER_DAY + 32  # every request still counted


async def test_one_tenants_names_leave_another_tenants_names_alone(limiter):
    noisy, quiet = f"noisy-{uuid.uuid4().hex[:8]}", f"quiet-{uuid.uuid4().hex[:8]}"
    for n in range(MODELS_PER_DAY + 5):
        await release(limiter, policy("k", noisy), f"junk-{n}")
    await release(limiter, policy("k", quiet), "grok-4")
    assert await models_of(limiter, quiet) == {"grok-4": 1}


def test_a_model_the_upstream_refuses_is_ledgered_as_other_through_a_gateway(simulator, tmp_path):
    import httpx

    from tests.support.keyfiles import key_entry
    from tests.support.processes import gateway_env, start_gateway
    from tests.support.usage import admin_entry, chat

    keys = tmp_path / "keys.toml"
    keys.write_text(
        '[defaults]\nrequests = "1000/minute"\n'
        + key_entry("probe", "gk-bounds-probe", tenant="probing")
        + admin_entry("ops", "gk-bounds-admin")
    )
    gateway = start_gateway(gateway_env(simulator, str(keys)))
    try:
        for n in range(3):
            refused = chat(gateway.url, "gk-bounds-probe", model=f"no-such-model-{n}")
            assert refused.status_code == 404
        assert chat(gateway.url, "gk-bounds-probe").status_code == 200
        today = datetime.now(UTC).date().isoformat()
        report = httpx.get(
            f"{gateway.url}/admin/v1/usage",
            params={"from": today, "to": today, "group_by": "model"},
            headers={"Authorization": "Bearer gk-bounds-admin"},
        ).json()
    finally:
        gateway.stop()
    requests = {row["model"]: row["requests"] for row in report["data"]}
    assert requests == {OTHER_MODEL: 3, "grok-4-1-fast-non-reasoning": 1}


def test_a_large_export_arrives_streamed_and_exact(simulator, redis_server, tmp_path):
    import httpx
    import redis as redis_py

    from tests.support.keyfiles import key_entry
    from tests.support.processes import gateway_env, start_gateway
    from tests.support.usage import admin_entry

    tenants, days = 20, 30  # rows dated in January: no other test's traffic is there
    client = redis_py.Redis.from_url(redis_server.url)
    with client.pipeline(transaction=False) as pipe:
        for t in range(tenants):
            for d in range(days):
                for key in ("a", "b"):
                    row = f"gw:{{t:tenant-{t}}}:led:2026-01-{d + 1:02d}:{key}-{t}"
                    pipe.hset(row, mapping={f"{c}|grok-{m}": 1 for c in "r$" for m in range(3)})
        pipe.execute()
    keys = tmp_path / "keys.toml"
    keys.write_text(
        '[defaults]\nrequests = "1000/minute"\n'
        + key_entry("k", "gk-export-k")
        + admin_entry("ops", "gk-export-admin")
    )
    gateway = start_gateway(gateway_env(simulator, str(keys), REDIS_URL=redis_server.url))
    try:
        with httpx.stream(
            "GET",
            f"{gateway.url}/admin/v1/usage",
            params={"from": "2026-01-01", "to": "2026-01-31", "format": "csv"},
            headers={"Authorization": "Bearer gk-export-admin"},
            timeout=30,
        ) as answer:
            assert answer.status_code == 200
            assert "content-length" not in answer.headers  # sent as it is made
            body = answer.read().decode()
    finally:
        gateway.stop()
    header, *rows = list(csv.reader(io.StringIO(body, newline="")))
    assert header[:4] == ["day", "tenant", "key", "model"]
    assert len(rows) == tenants * days * 2 * 3
    assert [r[:4] for r in rows] == sorted(r[:4] for r in rows)  # by day, then the rest
    assert sum(int(r[4]) for r in rows) == tenants * days * 2 * 3


# --- spend holds through a Redis outage ----------------------------------------------------


@pytest.fixture
async def outage():
    """A private redis-server and two replicas' limiters on it (local mode); stop() cuts it."""
    from service.limiter import create_limiter
    from tests.support.processes import start_redis

    server = start_redis()
    replicas = [create_limiter(server.url, failure_mode="local", redis_timeout=0.2) for _ in "ab"]
    for limiter in replicas:
        await limiter.start()
    yield server, replicas
    for limiter in replicas:
        await limiter.aclose()
    server.stop()


def spender(spend: str) -> LimitPolicy:
    from service.limiter.policy import parse_spend

    return LimitPolicy(
        key_id=f"spender-{uuid.uuid4().hex[:6]}",
        tenant="acme",
        requests=parse_rates("1000/hour"),
        spend=parse_spend(spend),
    )


USD = 10_000_000_000


async def test_a_budget_spent_before_an_outage_stays_refused_on_every_replica(outage):
    server, (a, b) = outage
    p = spender("1/day")
    await a.release(p, await a.admit(p), charge(10, USD))  # the budget is spent
    assert (await a.admit(p)).reason == (await b.admit(p)).reason == "spend_limit_exceeded"
    server.stop()  # a real outage: both replicas fall back to memory
    for limiter in (a, b):
        refused = await limiter.admit(p)
        assert refused.store == "memory" and refused.reason == "spend_limit_exceeded"


async def test_spend_during_an_outage_counts_on_from_what_redis_last_said(outage):
    server, (a, _) = outage
    p = spender("1/day")
    await a.release(p, await a.admit(p), charge(10, USD * 6 // 10))
    assert (await a.admit(p)).allowed  # Redis says 0.6 of 1 spent
    server.stop()
    in_memory = await a.admit(p)
    assert in_memory.allowed and in_memory.store == "memory"
    await a.release(p, in_memory, charge(10, USD // 2))  # 0.6 + 0.5: spent
    assert (await a.admit(p)).reason == "spend_limit_exceeded"


async def test_a_request_admitted_before_the_outage_and_ending_in_it_counts_too(outage):
    server, (a, _) = outage
    p = spender("1/day")
    await a.release(p, await a.admit(p), charge(10, USD // 10))  # Redis says 0.1 spent
    running = await a.admit(p)
    server.stop()
    assert (await a.admit(p)).store == "memory"  # the outage is noticed
    await a.release(p, running, charge(10, USD))  # its cost waits for Redis, and counts here
    assert (await a.admit(p)).reason == "spend_limit_exceeded"


# --- spend held at admission: overshoot bounded by the estimates' error ---------------------


async def test_concurrent_admissions_hold_their_estimates_against_the_budget(limiter):
    # 100 admissions at once against a budget that pays for 3 estimates: 3 are admitted.
    p = spender("1/day")
    estimate = USD * 3 // 10  # each request is expected to cost $0.30
    decisions = await asyncio.gather(*(limiter.admit(p, (), estimate) for _ in range(100)))
    admitted = [d for d in decisions if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    assert len(admitted) == 3
    assert {d.reason for d in refused} == {"spend_limit_exceeded"}
    assert all(d.retry_after == 1 for d in refused)  # held, not spent: retry soon
    assert "held by requests in flight" in refused[0].spend_limit
    # One ends having cost less than it held: its hold goes, its real cost counts.
    await limiter.release(p, admitted[0], charge(10, USD // 10))
    assert (await limiter.admit(p, (), estimate)).allowed  # 0.1 spent + 0.6 held + 0.3
    assert not (await limiter.admit(p, (), estimate)).allowed


async def test_with_nothing_held_one_request_starts_whatever_its_estimate(limiter):
    p = spender("1/day")
    first = await limiter.admit(p, (), 5 * USD)  # more than the whole budget
    assert first.allowed
    assert (await limiter.admit(p, (), 1)).reason == "spend_limit_exceeded"
    await limiter.release(p, first, charge(10, USD // 2))
    assert (await limiter.admit(p, (), 5 * USD)).allowed  # nothing held, $0.50 left


async def test_two_replicas_share_the_holds(redis_server):
    from service.limiter import create_limiter

    replicas = [create_limiter(redis_server.url, redis_timeout=1.0) for _ in "ab"]
    for r in replicas:
        await r.start()
    try:
        p = spender("1/day")
        decisions = await asyncio.gather(
            *(replicas[i % 2].admit(p, (), USD * 3 // 10) for i in range(40))
        )
        assert sum(d.allowed for d in decisions) == 3
    finally:
        for r in replicas:
            await r.aclose()


async def test_a_dead_replicas_holds_lapse_within_a_lease(redis_server):
    from service.limiter import create_limiter

    dying = create_limiter(redis_server.url, lease_seconds=1.0)
    living = create_limiter(redis_server.url, lease_seconds=1.0)
    await dying.start()
    await living.start()
    try:
        p = spender("1/day")
        assert (await dying.admit(p, (), USD // 2)).allowed
        assert (await dying.admit(p, (), USD // 2)).allowed
        await dying.aclose()  # gone without releasing: nothing renews its holds
        assert not (await living.admit(p, (), USD // 2)).allowed
        await asyncio.sleep(1.3)
        assert (await living.admit(p, (), USD // 2)).allowed
    finally:
        await living.aclose()


def test_a_budget_that_pays_for_three_streams_admits_about_three_of_twenty(simulator, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.support.keyfiles import key_entry
    from tests.support.processes import gateway_env, start_gateway

    keys = tmp_path / "keys.toml"
    # Each request holds its estimate: ~10 input tokens and max_tokens 1000 at grok-4's list
    # price ($3 / $15 per million): ~$0.015; the budget pays for three.
    keys.write_text(
        '[defaults]\nrequests = "1000/minute"\n'
        + key_entry("thrifty", "gk-bounds-thrifty", extra='spend = "0.046/day"')
    )
    gateway = start_gateway(gateway_env(simulator, str(keys)))
    body = {
        "model": "grok-4",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}],
        "sim": {"first_byte_delay_ms": 3000},  # all twenty arrive while three are held
    }

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/api/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer gk-bounds-thrifty"},
            timeout=30,
        )

    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(post, range(20)))
    finally:
        gateway.stop()
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 3, codes
    refused = [a for a in answers if a.status_code == 429]
    assert {a.json()["error"]["code"] for a in refused} == {"spend_limit_exceeded"}
    assert all("x-should-retry" not in a.headers for a in refused)  # held: retry soon
