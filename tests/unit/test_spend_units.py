"""Spend budgets, tenant budgets, the ledger and response ownership: one specification for
both stores (memory, and Redis on fakeredis), and the key file that configures them."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import fakeredis
import pytest

from service.limiter.base import LimitState, UsageSnapshot
from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy, parse_rates, parse_spend
from service.limiter.redis_store import RedisLimiter
from service.registry.keys import RegistryError, parse_registry
from service.usage.ledger import MemoryLedger
from service.usage.record import TICKS_PER_USD, Totals
from tests.support.charges import charge, ledger_of
from tests.support.keyfiles import digest

USD = TICKS_PER_USD


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        return MemoryLimiter(lease_seconds=30)
    return RedisLimiter(fakeredis.FakeAsyncRedis(), lease_seconds=30)


def policy(
    key="k",
    tenant=None,
    requests="1000/hour",
    spend="",
    tenant_spend="",
    tenant_tokens="",
    tokens="",
    conc=None,
) -> LimitPolicy:
    return LimitPolicy(
        key_id=key,
        tenant=tenant,
        requests=parse_rates(requests) if requests else (),
        tokens=parse_rates(tokens) if tokens else (),
        concurrent=conc,
        spend=parse_spend(spend) if spend else (),
        tenant_tokens=parse_rates(tenant_tokens) if tenant_tokens else (),
        tenant_spend=parse_spend(tenant_spend) if tenant_spend else (),
    )


def seconds_to_midnight_utc() -> float:
    now = datetime.now(UTC)
    return (
        datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now
    ).total_seconds()


def seconds_to_next_month_utc() -> float:
    now = datetime.now(UTC)
    first = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return (first - now).total_seconds()


async def spend(limiter, p, ticks: int, **kwargs) -> None:
    decision = await limiter.admit(p)
    assert decision.allowed
    await limiter.release(p, decision, charge(cost=ticks, **kwargs))


# --- spend budgets -------------------------------------------------------------------------


async def test_a_spent_daily_budget_refuses_until_midnight_utc(limiter):
    p = policy(spend="2/day")
    await spend(limiter, p, USD)
    assert (await limiter.admit(p)).allowed  # $1 of $2: still open
    await limiter.release(p, await limiter.admit(p), charge(cost=USD + 1))
    refused = await limiter.admit(p)
    assert (refused.allowed, refused.reason) == (False, "spend_limit_exceeded")
    assert refused.spend_limit == "key budget $2/day"
    assert abs(refused.retry_after - seconds_to_midnight_utc()) <= 2


async def test_a_spent_monthly_budget_refuses_until_the_month_ends(limiter):
    p = policy(spend="100/day;1.5/month")
    await spend(limiter, p, 2 * USD)
    refused = await limiter.admit(p)
    assert refused.reason == "spend_limit_exceeded"
    assert refused.spend_limit == "key budget $1.5/month"
    assert abs(refused.retry_after - seconds_to_next_month_utc()) <= 2


async def test_spend_wins_over_a_spent_request_budget(limiter):
    p = policy(requests="1/hour", spend="1/day")
    await spend(limiter, p, USD)
    refused = await limiter.admit(p)
    assert refused.reason == "spend_limit_exceeded"
    assert refused.retry_after > 3600 or seconds_to_midnight_utc() < 3600


async def test_a_spend_refusal_spends_nothing(limiter):
    p = policy(requests="3/hour", spend="1/day")
    await spend(limiter, p, USD)
    assert not any([(await limiter.admit(p)).allowed for _ in range(5)])
    without_spend = policy(requests="3/hour")
    assert (await limiter.admit(without_spend)).requests.remaining == 1  # 1 used, this one: 2


async def test_tenant_spend_is_shared_by_its_keys(limiter):
    a = policy(key="a", tenant="t", tenant_spend="1/day")
    b = policy(key="b", tenant="t", tenant_spend="1/day")
    other = policy(key="c", tenant="u", tenant_spend="1/day")
    await spend(limiter, a, USD)
    refused = await limiter.admit(b)
    assert (refused.reason, refused.spend_limit) == ("spend_limit_exceeded", "tenant budget $1/day")
    assert (await limiter.admit(other)).allowed


async def test_tenant_tokens_are_shared_by_its_keys(limiter):
    a = policy(key="a", tenant="t", tenant_tokens="100/hour")
    b = policy(key="b", tenant="t", tenant_tokens="100/hour")
    await limiter.release(a, await limiter.admit(a), charge(tokens=60))
    second = await limiter.admit(b)
    assert second.allowed and second.tokens.remaining == 40
    await limiter.release(b, second, charge(tokens=60))  # overshoots, as token budgets may
    refused = await limiter.admit(a)
    assert refused.reason == "tokens_limit_exceeded"


# --- the ledger ------------------------------------------------------------------------------


async def test_the_ledger_sums_each_day_tenant_key_and_model(limiter):
    a = policy(key="a", tenant="acme")
    b = policy(key="b", tenant="acme")
    loner = policy(key="solo")
    await spend(limiter, a, 7, tokens=40, model="grok-4")
    await spend(limiter, a, 5, tokens=8, model="grok-4")
    await spend(limiter, a, 1, model="grok-3")
    await spend(limiter, b, 2, tokens=4, model="grok-4")
    await spend(limiter, loner, 3, model="-")
    today = datetime.now(UTC).date()
    rows = await ledger_of(limiter).rows(today - timedelta(days=1), today + timedelta(days=1))
    assert [(r.tenant, r.key, r.model, r.totals) for r in rows] == [
        ("-", "solo", "-", Totals(1, 0, 0, 0, 0, 3)),
        ("acme", "a", "grok-3", Totals(1, 0, 0, 0, 0, 1)),
        ("acme", "a", "grok-4", Totals(2, 36, 0, 12, 0, 12)),
        ("acme", "b", "grok-4", Totals(1, 3, 0, 1, 0, 2)),
    ]
    assert {r.day for r in rows} == {today}
    assert [r.key for r in await ledger_of(limiter).rows(today, today, tenant="acme")] == [
        "a",
        "a",
        "b",
    ]
    assert [r.key for r in await ledger_of(limiter).rows(today, today, tenant="-")] == ["solo"]
    assert [r.model for r in await ledger_of(limiter).rows(today, today, key="b")] == ["grok-4"]
    assert await ledger_of(limiter).rows(today + timedelta(days=1), today + timedelta(days=9)) == []


async def test_a_long_model_name_is_cut_in_the_ledger(limiter):
    p = policy(key="long")
    await spend(limiter, p, 1, model="m" * 1000)
    today = datetime.now(UTC).date()
    (row,) = await ledger_of(limiter).rows(today, today, key="long")
    assert row.model == "m" * 128


# --- the usage snapshot ----------------------------------------------------------------------


def test_the_memory_store_reads_usage_at_most_five_times_a_second_per_key():
    from service.limiter.base import USAGE_READS_PER_SECOND, ReadsExceeded

    limiter = MemoryLimiter()
    while True:
        started, answered, refused = time.time(), 0, []
        for _ in range(8):
            try:
                limiter.snapshot_now(policy(key="poller"))
                answered += 1
            except ReadsExceeded as exc:
                refused.append(exc.retry_after)
        if int(time.time()) == int(started):
            break
    assert answered == USAGE_READS_PER_SECOND
    assert len(refused) == 8 - USAGE_READS_PER_SECOND and all(0 < r <= 1 for r in refused)
    limiter.snapshot_now(policy(key="other"))  # another key reads on


async def test_the_usage_snapshot_shows_every_budget_and_spends_nothing(limiter):
    p = policy(
        key="a",
        tenant="acme",
        requests="10/minute;100/day",
        tokens="1000/hour",
        spend="5/day",
        tenant_spend="50/month",
        tenant_tokens="5000/day",
        conc=4,
    )
    await spend(limiter, p, USD // 2, tokens=120, model="grok-4")
    held = await limiter.admit(p)
    first = await limiter.usage_snapshot(p)
    assert standing(await limiter.usage_snapshot(p)) == standing(first)  # reading spends nothing
    by = {(s.scope, s.kind, s.window): s for s in first.limits}
    assert by["key", "requests", "1 minute"].remaining == 8
    assert by["key", "requests", "1 day"].remaining == 98
    assert by["key", "tokens", "1 hour"].remaining == 880
    assert by["tenant", "tokens", "1 day"].remaining == 4880
    day = by["key", "spend", "day"]
    assert (day.limit, day.remaining) == (5 * USD, 5 * USD - USD // 2)
    assert abs(day.reset_seconds - seconds_to_midnight_utc()) <= 2
    month = by["tenant", "spend", "month"]
    assert (month.limit, month.remaining) == (50 * USD, 50 * USD - USD // 2)
    assert by["key", "concurrent", None] == LimitState("key", "concurrent", None, 4, 3, None)
    assert 0 < by["key", "requests", "1 minute"].reset_seconds <= 60
    expected = Totals(1, 90, 0, 30, 0, USD // 2)
    assert (first.key_today, first.key_month) == (expected, expected)
    assert (first.tenant_today, first.tenant_month) == (expected, expected)
    await limiter.release(p, held, charge())
    after = await limiter.usage_snapshot(p)
    assert after.key_today.requests == 2


def standing(snapshot: UsageSnapshot) -> tuple:
    """A snapshot without its reset times, which move with the clock."""
    limits = [(s.scope, s.kind, s.window, s.limit, s.remaining) for s in snapshot.limits]
    totals = (snapshot.key_today, snapshot.key_month, snapshot.tenant_today, snapshot.tenant_month)
    return limits, totals


async def test_a_key_without_tenant_has_no_tenant_usage(limiter):
    p = policy(key="solo", spend="1/day")
    snapshot = await limiter.usage_snapshot(p)
    assert (snapshot.tenant_today, snapshot.tenant_month) == (None, None)
    assert [(s.scope, s.kind) for s in snapshot.limits] == [("key", "requests"), ("key", "spend")]


# --- response ownership ----------------------------------------------------------------------


async def test_a_recorded_response_belongs_to_the_tenant_and_only_to_it(limiter):
    a = policy(key="a", tenant="acme", requests="100/hour")
    b = policy(key="b", tenant="acme", requests="100/hour")
    intruder = policy(key="c", tenant="evil", requests="100/hour")
    await limiter.release(a, await limiter.admit(a), charge(record="resp_1"))
    assert (await limiter.admit(b, ("resp_1",))).allowed  # same tenant, other key
    for _ in range(3):
        refused = await limiter.admit(intruder, ("resp_1",))
        assert (refused.allowed, refused.reason) == (False, "not_found")
    assert (await limiter.admit(intruder)).requests.remaining == 99  # the refusals spent nothing
    assert (await limiter.admit(a, ("resp_unknown",))).reason == "not_found"


async def test_a_key_without_tenant_is_its_own_tenant(limiter):
    solo = policy(key="solo")
    other = policy(key="other")
    await limiter.release(solo, await limiter.admit(solo), charge(record="resp_s"))
    assert (await limiter.admit(solo, ("resp_s",))).allowed
    assert (await limiter.admit(other, ("resp_s",))).reason == "not_found"


async def test_a_deleted_response_is_not_found_any_more(limiter):
    p = policy(key="a", tenant="acme")
    await limiter.release(p, await limiter.admit(p), charge(record="resp_d"))
    deleting = await limiter.admit(p, ("resp_d",))
    await limiter.release(p, deleting, charge(forget="resp_d"))
    assert (await limiter.admit(p, ("resp_d",))).reason == "not_found"


async def test_an_oversized_response_id_is_never_owned(limiter):
    p = policy(key="a", tenant="acme")
    await limiter.release(p, await limiter.admit(p), charge(record="r" * 300))
    assert (await limiter.admit(p, ("r" * 300,))).reason == "not_found"


def test_memory_ownership_is_bounded_and_forgets_the_oldest():
    from service.limiter import memory_store

    limiter = MemoryLimiter()
    p = policy(key="a")
    for n in range(memory_store.OWNED_RESPONSES + 10):
        limiter.note_responses(p, charge(record=f"resp_{n}"))
    assert not limiter.owns(p, "resp_0")
    assert limiter.owns(p, f"resp_{memory_store.OWNED_RESPONSES + 9}")


async def test_the_memory_ledger_keeps_retention_days():
    now = [datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()]
    limiter = MemoryLimiter(ledger=MemoryLedger(retention_days=10), clock=lambda: now[0])
    p = policy(key="a")
    limiter.release_now(p, limiter.admit_now(p), charge(cost=1))
    now[0] += 5 * 86400
    limiter.release_now(p, limiter.admit_now(p), charge(cost=2))
    ledger = limiter.ledger
    everything = (date(2026, 1, 1), date(2026, 12, 31))
    assert [r.day for r in await ledger.rows(*everything)] == [date(2026, 3, 1), date(2026, 3, 6)]
    now[0] += 6 * 86400  # the first day is now 11 days old
    limiter.admit_now(p)  # admissions sweep, at most once a minute
    assert [r.day for r in await ledger.rows(*everything)] == [date(2026, 3, 6)]


# --- the key file ----------------------------------------------------------------------------


def registry(text: str):
    return parse_registry(text.encode(), source="keys.toml")


def test_spend_is_read_from_keys_defaults_and_tenants():
    reg = registry(
        f"""
[defaults]
requests = "60/minute"
spend = "25/day;500/month"

[tenants.acme]
requests = "1000/minute"
tokens = "100000/day"
spend = "2000/month"

[[keys]]
id = "acme-prod"
tenant = "acme"
sha256 = "{digest("one")}"
spend = "10.50/day"

[[keys]]
id = "plain"
sha256 = "{digest("two")}"
"""
    )
    acme = reg.lookup("one").policy
    assert [(s.period, s.ticks) for s in acme.spend] == [("day", 105 * USD // 10)]
    assert [(s.period, s.ticks) for s in acme.tenant_spend] == [("month", 2000 * USD)]
    assert [(w.limit, w.seconds) for w in acme.tenant_tokens] == [(100000, 86400)]
    plain = reg.lookup("two").policy
    assert [(s.period, s.ticks) for s in plain.spend] == [("day", 25 * USD), ("month", 500 * USD)]
    assert (plain.tenant_spend, plain.tenant_tokens) == ((), ())


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('[defaults]\nspend = "lots"', r"keys.toml \[defaults\]: spend: bad spend budget 'lots'"),
        ('[tenants.acme]\nspend = "5/week"', r"\[tenants.acme\]: spend: .*'day' or 'month'"),
        ("[tenants.acme]\nconcurrent = 5", r"\[tenants.acme\]: only requests, spend, tokens"),
    ],
)
def test_a_bad_spend_or_tenant_field_names_the_entry(entry, message):
    with pytest.raises(RegistryError, match=message):
        registry(entry)


@pytest.mark.parametrize(
    "instant",
    ["2026-02-28T23:59:59.500", "2026-12-31T12:00:00", "2024-02-29T00:00:00.001"],
)
def test_spend_periods_in_the_snapshot_follow_the_calendar(instant):
    # A day's budget resets at 00:00 UTC, a month's on the 1st, on the store's clock.
    now = datetime.fromisoformat(instant).replace(tzinfo=UTC).timestamp()
    limiter = MemoryLimiter(clock=lambda: now)
    snapshot = limiter.snapshot_now(policy(spend="1/day;1/month"))
    day, month = (s for s in snapshot.limits if s.kind == "spend")
    assert (now + day.reset_seconds) % 86400 == pytest.approx(0, abs=1e-6)
    month_end = datetime.fromtimestamp(now + month.reset_seconds, UTC)
    assert (month_end.day, month_end.hour, month_end.minute) == (1, 0, 0)
    assert month_end.month == datetime.fromtimestamp(now, UTC).month % 12 + 1
