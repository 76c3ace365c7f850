"""Limiter arithmetic, the same specification for both stores (memory, and Redis on fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest

from service.limiter import rate_limit_headers
from service.limiter.headers import duration
from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy, parse_rates
from service.limiter.redis_store import RedisLimiter
from tests.support.charges import charge


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        return MemoryLimiter(lease_seconds=30)
    return RedisLimiter(fakeredis.FakeAsyncRedis(), lease_seconds=30)


def policy(key="k", tenant=None, requests="1000/hour", tenant_requests="", tokens="", conc=None):
    return LimitPolicy(
        key_id=key,
        tenant=tenant,
        requests=parse_rates(requests) if requests else (),
        tenant_requests=parse_rates(tenant_requests) if tenant_requests else (),
        tokens=parse_rates(tokens) if tokens else (),
        concurrent=conc,
    )


async def admit_n(limiter, p, n):
    return [await limiter.admit(p) for _ in range(n)]


async def test_exactly_the_limit_is_admitted_then_refused(limiter):
    decisions = await admit_n(limiter, policy(requests="5/hour"), 8)
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    refused = decisions[-1]
    assert refused.reason == "rate_limit_exceeded"
    assert refused.retry_after >= 1
    assert refused.requests.remaining == 0


async def test_a_refused_request_spends_nothing_in_any_window(limiter):
    tenant_full = policy(key="a", tenant="t", requests="10/hour", tenant_requests="2/hour")
    await admit_n(limiter, tenant_full, 2)
    refused = await admit_n(limiter, tenant_full, 5)
    assert not any(d.allowed for d in refused)
    # The key's own window saw only the two admitted requests.
    alone = policy(key="a", tenant="t", requests="10/hour")
    assert (await limiter.admit(alone)).requests.remaining == 7


async def test_keys_do_not_touch_each_other(limiter):
    await admit_n(limiter, policy(key="a", requests="2/hour"), 5)
    assert all(d.allowed for d in await admit_n(limiter, policy(key="b", requests="2/hour"), 2))


async def test_tenant_budget_is_shared_by_its_keys(limiter):
    a = policy(key="a", tenant="t", tenant_requests="3/hour")
    b = policy(key="b", tenant="t", tenant_requests="3/hour")
    results = [(await limiter.admit(p)).allowed for p in (a, b, a, b, a, b)]
    assert results.count(True) == 3


async def test_headers_describe_the_most_restrictive_window(limiter):
    decision = await limiter.admit(policy(requests="100/minute;3/hour"))
    assert (decision.requests.limit, decision.requests.remaining) == (3, 2)
    assert decision.requests.window_seconds == 3600


async def test_token_budget_refuses_once_spent_and_charges_on_release(limiter):
    p = policy(tokens="100/hour")
    first = await limiter.admit(p)
    await limiter.release(p, first, charge(60))
    second = await limiter.admit(p)
    assert second.allowed and second.tokens.remaining == 40
    await limiter.release(p, second, charge(60))  # overshoots: usage is known only afterwards
    third = await limiter.admit(p)
    assert not third.allowed and third.reason == "tokens_limit_exceeded"
    assert third.tokens.remaining == 0


async def test_concurrency_cap_and_release(limiter):
    p = policy(conc=2)
    a, b, c = await admit_n(limiter, p, 3)
    assert a.allowed and b.allowed and not c.allowed
    assert c.reason == "concurrency_limit_exceeded" and c.retry_after == 1
    await limiter.release(p, a, charge())
    assert (await limiter.admit(p)).allowed


async def test_memory_leases_free_their_slots_when_they_expire():
    """A slot never released (its holder gone) frees itself at its lease's expiry, and
    only then: the store skips its scan of leases until the earliest one is due."""
    now = [1_000_000.0]
    limiter = MemoryLimiter(lease_seconds=30, clock=lambda: now[0])
    p = policy(conc=2)
    first = await limiter.admit(p)
    now[0] += 10
    assert (await limiter.admit(p)).allowed  # held until +40
    assert not (await limiter.admit(p)).allowed
    await limiter.release(p, first, charge())
    now[0] += 19.5  # first's lease would have run out at +30: its slot was freed by release
    assert (await limiter.admit(p)).allowed  # held until +59.5
    assert not (await limiter.admit(p)).allowed
    now[0] += 11  # the +10 lease expired (+40 < +40.5): one slot free again
    assert (await limiter.admit(p)).allowed
    assert not (await limiter.admit(p)).allowed
    now[0] += 60  # every lease expired
    assert [d.allowed for d in await admit_n(limiter, p, 3)] == [True, True, False]


async def test_concurrency_refusal_spends_no_request_unit(limiter):
    p = policy(requests="3/hour", conc=1)
    held = await limiter.admit(p)
    assert not any(d.allowed for d in await admit_n(limiter, p, 4))
    await limiter.release(p, held, charge())
    outcomes = []
    for _ in range(3):
        decision = await limiter.admit(p)
        outcomes.append(decision.reason)
        if decision.allowed:
            await limiter.release(p, decision, charge())
    # Two more units were left of three: the four refusals spent none.
    assert outcomes == [None, None, "rate_limit_exceeded"]


async def test_window_resets_at_its_boundary(limiter):
    decision = await limiter.admit(policy(requests="5/minute"))
    assert 0 < decision.requests.reset_seconds <= 60


def test_openai_reset_durations():
    assert [duration(s) for s in (0.2, 1, 59.1, 60, 360, 3725)] == [
        "1s",
        "1s",
        "1m0s",
        "1m0s",
        "6m0s",
        "1h2m5s",
    ]


async def test_header_set_for_an_allowed_and_a_refused_request():
    limiter = MemoryLimiter()
    p = policy(requests="1/minute", tokens="1000/day")
    allowed = dict(rate_limit_headers(await limiter.admit(p)))
    assert allowed[b"x-ratelimit-limit-requests"] == b"1"
    assert allowed[b"x-ratelimit-remaining-requests"] == b"0"
    assert allowed[b"x-ratelimit-reset-requests"].endswith(b"s")
    assert allowed[b"x-ratelimit-limit-tokens"] == b"1000"
    assert allowed[b"ratelimit-policy"] == b'"requests";q=1;w=60, "tokens";q=1000;w=86400'
    assert allowed[b"ratelimit"].startswith(b'"requests";r=0;t=')
    assert b"retry-after" not in allowed
    refused = dict(rate_limit_headers(await limiter.admit(p)))
    assert 1 <= int(refused[b"retry-after"]) <= 60
