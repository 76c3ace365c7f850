"""Admissions made in one loop turn share one script call, and decide exactly as that many
calls in a row would: on a real redis-server, with both clients, against admissions one by
one and against the memory limiter; and a batch whose reply was lost (a real TCP relay that
stops passing replies) is taken back whole."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.limiter import create_limiter
from service.limiter.base import Decision
from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy, parse_rates, parse_spend
from service.usage.record import TICKS_PER_USD
from tests.support.charges import charge, count_round_trips
from tests.support.faulty_link import FaultyLink
from tests.support.limiters import CLIENTS, replica
from tests.support.redis_state import live_slots, request_units, slots, total
from tests.support.waiting import eventually

TIMEOUT = 0.3  # REDIS_TIMEOUT_SECONDS: a lost reply is given up quickly

BATCH = 6


def policy(**limits) -> LimitPolicy:
    """A key of its own (no tenant), with the given limits."""
    return LimitPolicy(
        key_id=uuid.uuid4().hex[:12],
        tenant=None,
        requests=parse_rates(limits.get("requests", "1000/hour;100000/day")),
        tokens=parse_rates(limits["tokens"]) if "tokens" in limits else (),
        concurrent=limits.get("concurrent"),
        spend=parse_spend(limits["spend"]) if "spend" in limits else (),
    )


def seen(decision: Decision) -> tuple:
    """What a client learns of a decision (headers and error), resets aside: they tick."""

    def window(state):
        return None if state is None else (state.limit, state.remaining, state.window_seconds)

    return (
        decision.allowed,
        decision.reason,
        decision.retry_after > 0,
        window(decision.requests),
        window(decision.tokens),
        decision.spend_limit,
        decision.lease is not None,
    )


# Each case: the limits, and what to spend before the admissions (tokens, ticks).
CASES = {
    "requests window": ({"requests": "4/hour;100000/day"}, None),
    "concurrency cap": ({"concurrent": 3}, None),
    "the tighter of both": ({"requests": "5/hour", "concurrent": 2}, None),
    "tokens spent": ({"tokens": "100/hour"}, (100, 0)),
    "spend budget spent": ({"spend": "1/day"}, (10, TICKS_PER_USD)),
    "all fit": ({"requests": "100/hour", "concurrent": 50}, None),
}


async def _spend_first(limiter, p: LimitPolicy, spent) -> None:
    if spent is not None:
        await limiter.release(p, await limiter.admit(p), charge(*spent))


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", CASES)
async def test_a_batch_decides_as_admissions_one_at_a_time(redis_server, client, case):
    limits, spent = CASES[case]
    batched, alone = policy(**limits), policy(**limits)
    limiter = replica(redis_server.url, client)
    try:
        await _spend_first(limiter, batched, spent)
        await _spend_first(limiter, alone, spent)
        together = await asyncio.gather(*(limiter.admit(batched) for _ in range(BATCH)))
        one_by_one = [await limiter.admit(alone) for _ in range(BATCH)]
    finally:
        await limiter.aclose()
    assert [seen(d) for d in together] == [seen(d) for d in one_by_one]
    memory = MemoryLimiter()
    mirrored = policy(**limits)
    await _spend_first(memory, mirrored, spent)
    in_memory = [memory.admit_now(mirrored) for _ in range(BATCH)]
    assert [seen(d) for d in together] == [seen(d) for d in in_memory]
    if case != "all fit":
        assert not together[-1].allowed  # the case does refuse some


@pytest.mark.parametrize("client", CLIENTS)
async def test_admissions_of_one_turn_take_one_script_call_and_count_each(redis_server, client):
    p = policy(requests="4/hour;100000/day", concurrent=10)
    limiter = replica(redis_server.url, client)
    try:
        await limiter.admit(p)  # the script loaded: one unit and one slot
        sent = count_round_trips(limiter)
        decisions = await asyncio.gather(*(limiter.admit(p) for _ in range(BATCH)))
        assert sent == ["EVALSHA"]
        admitted = [d for d in decisions if d.allowed]
        assert len(admitted) == 3  # the hour's fourth unit was the first admission's
        # Each admitted request has its own lease and id; its release frees its slot alone.
        assert len({d.lease for d in admitted}) == len({d.id for d in admitted}) == 3
        assert await total(redis_server.url, request_units(p.key_id)) == 2 * 4
        assert await live_slots(redis_server.url, slots(p.key_id)) == 4
        await asyncio.gather(*(limiter.release(p, d, charge(1)) for d in admitted))
        assert await live_slots(redis_server.url, slots(p.key_id)) == 1
    finally:
        await limiter.aclose()


async def test_an_owner_check_goes_alone_and_refuses_an_unknown_id(redis_server):
    p = policy()
    limiter = replica(redis_server.url)
    try:
        sent = count_round_trips(limiter)
        checked, plain = await asyncio.gather(limiter.admit(p, ("resp_unknown",)), limiter.admit(p))
        assert sent == ["EVALSHA", "EVALSHA"]
        assert (checked.allowed, checked.reason) == (False, "not_found")
        assert plain.allowed
    finally:
        await limiter.aclose()


async def test_a_batch_whose_reply_was_lost_is_taken_back_whole(redis_server):
    """Redis ran the batch (units counted, leases added), its reply never came: the requests
    were admitted from memory instead, and once Redis answers each lost admission is taken
    back once, so none of them counts in Redis."""
    link = FaultyLink(redis_server.port)
    limiter = create_limiter(
        await link.start(), failure_mode="local", lease_seconds=30, redis_timeout=TIMEOUT
    )
    p = policy(requests="1000/hour", concurrent=10)
    units = request_units(p.key_id)
    try:
        await limiter.start()
        first = await limiter.admit(p)  # the scripts loaded
        await limiter.release(p, first, charge(1))
        link.replies_pass = False
        served = await asyncio.gather(*(limiter.admit(p) for _ in range(4)))
        assert {(d.store, d.allowed) for d in served} == {("memory", True)}
        assert await total(redis_server.url, units) == 1 + 4  # Redis did count the batch
        assert await live_slots(redis_server.url, slots(p.key_id)) == 4
        link.heal()
        assert await eventually(lambda: limiter.ready()[1] == "redis", 3)
        assert await total(redis_server.url, units) == 1
        assert await live_slots(redis_server.url, slots(p.key_id)) == 0
    finally:
        await limiter.aclose()
        await link.aclose()
