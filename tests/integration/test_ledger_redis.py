"""The ledger, the usage snapshot and response ownership on a real redis-server.

Separate limiter instances (each with its own connections) stand for separate replicas.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from service.limiter import create_limiter
from service.limiter.policy import LimitPolicy, parse_rates, parse_spend
from service.limiter.scripts import lua_source
from service.usage.record import TICKS_PER_USD, Totals
from tests.support.charges import charge, count_round_trips, ledger_of
from tests.support.limiters import CLIENTS, replica


@pytest.fixture
async def replicas(redis_server):
    group = [replica(redis_server.url, client) for client in CLIENTS]
    yield group
    for limiter in group:
        await limiter.aclose()


def tenant_policy(key: str, tenant: str, **budgets: str) -> LimitPolicy:
    return LimitPolicy(
        key_id=key,
        tenant=tenant,
        requests=parse_rates(budgets.get("requests", "1000/hour")),
        tokens=parse_rates(budgets["tokens"]) if "tokens" in budgets else (),
        concurrent=int(budgets["concurrent"]) if "concurrent" in budgets else None,
        spend=parse_spend(budgets["spend"]) if "spend" in budgets else (),
        tenant_requests=parse_rates("1000/hour"),
        tenant_tokens=parse_rates(budgets["tenant_tokens"]) if "tenant_tokens" in budgets else (),
        tenant_spend=parse_spend(budgets["tenant_spend"]) if "tenant_spend" in budgets else (),
    )


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_lua_calendar_periods_match_pythons_calendar(redis_server):
    client = aioredis.from_url(redis_server.url)
    script = client.register_script(
        lua_source("periods")
        + "local d, m, de, me = periods(tonumber(ARGV[1])) return {d, m, de, me}"
    )
    edges = ["1970-01-01", "2000-02-29", "2024-02-29", "2100-02-28", "2100-03-01", "2026-12-31"]
    days = [date.fromisoformat(d) for d in edges]
    rng = random.Random(7)
    days += [date(1970, 1, 1) + timedelta(days=rng.randrange(0, 80_000)) for _ in range(300)]
    try:
        for day in days:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            for offset_ms in (0, 86_399_999):
                ms = int(start.timestamp() * 1000) + offset_ms
                name, month, day_end, month_end = await script(args=[ms])
                next_month = date(day.year + day.month // 12, day.month % 12 + 1, 1)
                assert name.decode() == day.isoformat()
                assert month.decode() == day.isoformat()[:7]
                assert day_end == int(start.timestamp() * 1000) + 86_400_000
                assert month_end == int(
                    datetime(next_month.year, next_month.month, 1, tzinfo=UTC).timestamp() * 1000
                )
    finally:
        await client.aclose()


async def test_a_response_recorded_on_one_replica_is_owned_on_another(replicas, redis_server):
    one, two = replicas
    tenant = fresh("acme")
    a, b = tenant_policy("a", tenant), tenant_policy("b", tenant)
    intruder = tenant_policy("c", fresh("evil"))
    response = f"resp_{uuid.uuid4().hex}"
    await one.release(a, await one.admit(a), charge(record=response))
    assert (await two.admit(b, (response,))).allowed
    refused = await two.admit(intruder, (response,))
    assert (refused.allowed, refused.reason) == (False, "not_found")
    assert (await two.admit(intruder)).requests.remaining == 999  # the refusal spent nothing
    client = aioredis.from_url(redis_server.url)
    ttl = await client.pttl(f"gw:{{t:{tenant}}}:resp:{response}")
    await client.aclose()
    assert 29.9 * 86400_000 < ttl <= 30 * 86400_000
    deleting = await two.admit(b, (response,))
    await two.release(b, deleting, charge(forget=response))
    assert (await one.admit(a, (response,))).reason == "not_found"


async def test_the_ledger_read_on_one_replica_sums_what_every_replica_wrote(replicas, redis_server):
    tenant = fresh("acme")
    p = tenant_policy("k1", tenant)
    for limiter, (tokens, cost) in zip(replicas * 3, [(4, 10), (8, 20), (12, 30)] * 2, strict=True):
        await limiter.release(p, await limiter.admit(p), charge(tokens, cost, model="grok-4"))
    today = datetime.now(UTC).date()
    for limiter in replicas:
        rows = await ledger_of(limiter).rows(today - timedelta(days=1), today, tenant=tenant)
        assert [(r.day, r.tenant, r.key, r.model) for r in rows] == [
            (today, tenant, "k1", "grok-4")
        ]
        assert rows[0].totals == Totals(6, 36, 0, 12, 0, 120)
    client = aioredis.from_url(redis_server.url)
    ttl = await client.pttl(f"gw:{{t:{tenant}}}:led:{today.isoformat()}:k1")
    await client.aclose()
    assert 399 * 86400_000 < ttl <= 401 * 86400_000  # USAGE_RETENTION_DAYS, 400 by default


async def test_the_ledger_keeps_the_configured_retention(redis_server):
    limiter = replica(redis_server.url, retention_days=3)
    p = tenant_policy("k", fresh("short"))
    try:
        await limiter.release(p, await limiter.admit(p), charge(cost=1))
        client = aioredis.from_url(redis_server.url)
        (name,) = await client.keys(f"gw:{{t:{p.tenant}}}:led:*")
        ttl = await client.pttl(name)
        await client.aclose()
        assert 3 * 86400_000 < ttl <= 4 * 86400_000
    finally:
        await limiter.aclose()


async def test_the_snapshot_on_one_replica_shows_the_spend_of_all(replicas):
    tenant = fresh("acme")
    a = tenant_policy("a", tenant, spend="10/day", tenant_spend="100/month")
    b = tenant_policy("b", tenant, spend="10/day", tenant_spend="100/month")
    await replicas[0].release(a, await replicas[0].admit(a), charge(cost=3 * TICKS_PER_USD))
    await replicas[1].release(b, await replicas[1].admit(b), charge(cost=4 * TICKS_PER_USD))
    snapshot = await replicas[1].usage_snapshot(a)
    spend = {(s.scope, s.window): s.remaining for s in snapshot.limits if s.kind == "spend"}
    assert spend == {("key", "day"): 7 * TICKS_PER_USD, ("tenant", "month"): 93 * TICKS_PER_USD}
    assert snapshot.key_today.cost_ticks == 3 * TICKS_PER_USD
    assert snapshot.tenant_month.cost_ticks == 7 * TICKS_PER_USD
    assert snapshot.tenant_today.requests == 2


async def test_usage_is_read_from_running_sums_whatever_the_ledger_holds(replicas):
    # The attack of SPEC 15: a tenant's ledger row grown to tens of thousands of model
    # names. The usage answer comes from the running sums, so neither a swollen row nor a
    # deleted one changes it (and its Redis time does not grow with the row).
    tenant = fresh("swollen")
    p = tenant_policy("k", tenant)
    for model, cost in (("grok-4", 3), ("grok-3", 4)):
        await replicas[0].release(p, await replicas[0].admit(p), charge(8, cost, model=model))
    client = replicas[0].redis
    today = datetime.now(UTC).date().isoformat()
    row = f"gw:{{t:{tenant}}}:led:{today}:k"
    await client.hset(row, mapping={f"r|m{i}": 1 for i in range(20_000)})
    swollen = await replicas[1].usage_snapshot(p)
    await client.delete(row)
    emptied = await replicas[1].usage_snapshot(p)
    expected = Totals(2, 12, 0, 4, 0, 7)
    assert (swollen.key_today, swollen.key_month) == (expected, expected)
    assert (emptied.key_today, emptied.key_month) == (expected, expected)
    assert swollen.tenant_today == expected


async def test_usage_reads_are_limited_per_key_across_replicas_and_spend_nothing(replicas):
    from service.limiter.base import USAGE_READS_PER_SECOND, ReadsExceeded

    p = tenant_policy(fresh("reader"), fresh("acme"), requests="3/hour")
    while True:  # eight reads on two replicas within one second of Redis's clock
        await asyncio.sleep(1.02 - time.time() % 1)
        started = time.time()
        results = await asyncio.gather(
            *(replicas[i % 2].usage_snapshot(p) for i in range(8)), return_exceptions=True
        )
        if int(time.time()) == int(started):
            break
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ReadsExceeded)]
    assert (len(answered), len(refused)) == (USAGE_READS_PER_SECOND, 8 - USAGE_READS_PER_SECOND)
    assert all(0 < r.retry_after <= 1 for r in refused)
    [requests] = [s for s in answered[0].limits if s.kind == "requests" and s.scope == "key"]
    assert requests.remaining == 3  # reading spends no request unit
    await asyncio.sleep(1.02 - time.time() % 1)
    assert (await replicas[0].usage_snapshot(p)).key_today == Totals()


@pytest.mark.parametrize("client", CLIENTS)
async def test_admit_and_release_with_every_budget_ledger_and_ownership_take_two_round_trips(
    redis_server, client
):
    limiter = replica(redis_server.url, client)
    p = tenant_policy(
        "all",
        fresh("acme"),
        requests="10/minute;1000/hour",
        tokens="10000/hour",
        concurrent="5",
        spend="10/day;100/month",
        tenant_tokens="100000/day",
        tenant_spend="1000/month",
    )
    try:
        first = f"resp_{uuid.uuid4().hex}"
        await limiter.release(p, await limiter.admit(p), charge(10, 5, record=first))  # loads
        sent = count_round_trips(limiter)
        decision = await limiter.admit(p, (first,))
        await limiter.release(p, decision, charge(25, 7, record=f"resp_{uuid.uuid4().hex}"))
        assert decision.allowed
        assert sent == ["EVALSHA", "EVALSHA"]
    finally:
        await limiter.aclose()


async def test_the_ledger_raises_while_redis_is_down_and_the_snapshot_falls_back():
    from service.limiter import create_ledger
    from service.usage.ledger import LedgerUnavailable, MemoryLedger
    from tests.support.processes import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    limiter = create_limiter(url, redis_timeout=0.2)
    ledger = create_ledger(url, MemoryLedger(), redis_timeout=0.2)
    await limiter.start()
    try:
        today = datetime.now(UTC).date()
        with pytest.raises(LedgerUnavailable):  # a replica's memory is no ledger
            await ledger.rows(today, today)
        # The snapshot falls back to this replica's memory in local mode.
        snapshot = await limiter.usage_snapshot(tenant_policy("k", "t"))
        assert snapshot.key_today == Totals()
    finally:
        await limiter.aclose()
        await ledger.aclose()
