"""Releases ending in one loop turn share one script call, and charge exactly what they would
one by one, on a real redis-server (a lost reply through a real TCP relay that stops passing
replies)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from service.limiter import create_limiter
from service.limiter.policy import LimitPolicy, parse_rates, parse_spend
from service.limiter.redis_store import RedisLimiter
from service.usage.record import MEASURE_CAP, TICKS_PER_USD
from tests.support.charges import charge, count_round_trips
from tests.support.faulty_link import FaultyLink
from tests.support.limiters import CLIENTS, key_policy, replica
from tests.support.redis_state import token_units, total
from tests.support.waiting import eventually

TIMEOUT = 0.3  # REDIS_TIMEOUT_SECONDS: a lost reply is given up quickly


def policy(tenant: str | None = None) -> LimitPolicy:
    return LimitPolicy(
        key_id="k",
        tenant=tenant or f"acme-{uuid.uuid4().hex[:8]}",
        requests=parse_rates("1000/hour"),
        tokens=parse_rates("1000000/hour"),
        concurrent=100,
        spend=parse_spend("1000/day"),
        tenant_requests=parse_rates("1000/hour"),
        tenant_tokens=parse_rates("1000000/day"),
    )


async def _release_all(limiter: RedisLimiter, p: LimitPolicy, charges: list) -> list[str]:
    decisions = [await limiter.admit(p) for _ in charges]
    sent = count_round_trips(limiter)
    await asyncio.gather(
        *(limiter.release(p, d, c) for d, c in zip(decisions, charges, strict=True))
    )
    return sent


async def _state(url: str, p: LimitPolicy) -> dict:
    client = aioredis.from_url(url, decode_responses=True)
    tag = f"gw:{{t:{p.tenant}}}"
    day = datetime.now(UTC).date().isoformat()
    try:
        tokens = 0
        for name in await client.keys(f"{tag}:tok:k:k:*"):
            tokens += int(await client.get(name))
        markers = [await client.get(name) for name in await client.keys(f"{tag}:rel:*")]
        return {
            "ledger": await client.hgetall(f"{tag}:led:{day}:k"),
            "key_day": await client.hgetall(f"{tag}:sum:k:k:{day}"),
            "tenant_day": await client.hgetall(f"{tag}:sum:t:{p.tenant}:{day}"),
            "tenant_month": await client.hgetall(f"{tag}:sum:t:{p.tenant}:{day[:7]}"),
            "key_spend_day": int(await client.get(f"{tag}:spend:k:k:{day}") or 0),
            "key_tokens": tokens,
            "slots": await client.zcard(f"{tag}:conc:k"),
            "markers": sorted(markers),
        }
    finally:
        await client.aclose()


def _charged(state: dict) -> tuple[str, int, int]:
    """Requests in the key's ledger row, tokens in its windows, ticks in its day's spend."""
    return state["ledger"]["r|grok-test"], state["key_tokens"], state["key_spend_day"]


@pytest.mark.parametrize("client", CLIENTS)
async def test_releases_of_one_turn_take_one_script_call_and_charge_each_exactly(
    redis_server, client
):
    p = policy()
    batched = replica(redis_server.url, client)
    try:
        await batched.release(p, await batched.admit(p), charge(1, 1))  # scripts loaded
        charges = [charge(40, 3 * TICKS_PER_USD)] * 3 + [charge(8, 5, model="grok-other")] * 2
        sent = await _release_all(batched, p, charges)
        assert sent == ["EVALSHA"]
        state = await _state(redis_server.url, p)
    finally:
        await batched.aclose()
    assert state["ledger"] == {
        "r|grok-test": "4",
        "i|grok-test": "91",
        "o|grok-test": "30",
        "$|grok-test": str(9 * TICKS_PER_USD + 1),
        "r|grok-other": "2",
        "i|grok-other": "12",
        "o|grok-other": "4",
        "$|grok-other": "10",
    }
    sums = {"r": "6", "i": "103", "o": "34", "$": str(9 * TICKS_PER_USD + 11)}
    assert state["tenant_day"] == sums
    assert state["tenant_month"] == sums
    assert state["key_spend_day"] == 9 * TICKS_PER_USD + 11
    assert state["key_tokens"] == 137
    assert state["slots"] == 0
    assert state["markers"] == ["r"] * 6


async def test_replayed_releases_write_what_live_releases_write(redis_server):
    """Releases kept for later (Redis was unreachable) and replayed take the same script and
    write the same counters, rows and sums as releases applied as the requests end."""
    p, q = policy(), policy()
    limiter = replica(redis_server.url)
    try:
        charges = [charge(40, 3 * TICKS_PER_USD)] * 2 + [charge(8, 5, model="grok-other")]
        await _release_all(limiter, p, charges)
        for c in charges:
            limiter.defer(q, await limiter.admit(q), c)
        assert await limiter.replay() == len(charges)
        live, replayed = await _state(redis_server.url, p), await _state(redis_server.url, q)
    finally:
        await limiter.aclose()
    assert live == replayed


async def test_a_release_applied_before_is_skipped_and_the_rest_of_its_batch_applied(
    redis_server,
):
    p = policy()
    limiter = replica(redis_server.url)
    try:
        done, fresh = await limiter.admit(p), await limiter.admit(p)
        await limiter.release(p, done, charge(100, 7))
        await asyncio.gather(
            limiter.release(p, done, charge(100, 7)),  # a replay of the first: its marker says 'r'
            limiter.release(p, fresh, charge(20, 2)),
        )
        state = await _state(redis_server.url, p)
    finally:
        await limiter.aclose()
    assert _charged(state) == ("2", 120, 9)


async def test_one_release_twice_in_one_batch_is_applied_once(redis_server):
    p = policy()
    limiter = replica(redis_server.url)
    try:
        decision = await limiter.admit(p)
        await asyncio.gather(*(limiter.release(p, decision, charge(100, 7)) for _ in range(2)))
        state = await _state(redis_server.url, p)
    finally:
        await limiter.aclose()
    assert _charged(state) == ("1", 100, 7)


async def test_response_ids_recorded_and_forgotten_in_one_batch(redis_server):
    p = policy()
    limiter, other = replica(redis_server.url), replica(redis_server.url)
    old, new = f"resp_{uuid.uuid4().hex}", f"resp_{uuid.uuid4().hex}"
    try:
        await limiter.release(p, await limiter.admit(p), charge(1, record=old))
        await asyncio.gather(
            limiter.release(p, await limiter.admit(p), charge(1, record=new)),
            limiter.release(p, await limiter.admit(p), charge(1, forget=old)),
        )
        assert (await other.admit(p, (new,))).allowed
        assert (await other.admit(p, (old,))).reason == "not_found"
    finally:
        await limiter.aclose()
        await other.aclose()


async def test_an_implausible_measure_is_capped_and_its_batch_still_adds_up_exactly(redis_server):
    # A hostile upstream's cost past 2^53 ticks would round in Lua's doubles: each measure a
    # release sends is capped (2^46 ticks, ~$7,000 a request), so a batch adds up exactly.
    p = policy()
    limiter = replica(redis_server.url)
    try:
        await asyncio.gather(
            limiter.release(p, await limiter.admit(p), charge(4, 2**60 + 1)),
            limiter.release(p, await limiter.admit(p), charge(4, 1)),
        )
        state = await _state(redis_server.url, p)
    finally:
        await limiter.aclose()
    assert state["key_spend_day"] == MEASURE_CAP + 1
    assert state["ledger"]["$|grok-test"] == str(MEASURE_CAP + 1)


async def test_a_batch_whose_reply_was_lost_counts_each_release_once(redis_server):
    link = FaultyLink(redis_server.port)
    limiter = create_limiter(await link.start(), failure_mode="local", redis_timeout=TIMEOUT)
    p = key_policy(tokens="1000000/hour")
    try:
        await limiter.start()
        await limiter.release(p, await limiter.admit(p), charge(1))  # scripts loaded
        decisions = [await limiter.admit(p) for _ in range(4)]
        link.replies_pass = False  # Redis applies the batch; its reply never arrives
        await asyncio.gather(*(limiter.release(p, d, charge(100)) for d in decisions))
        assert limiter.ready()[1].startswith("local fallback")
        assert await total(redis_server.url, token_units(p.key_id)) == 401
        link.heal()  # the four are replayed one by one: their markers say 'r'
        assert await eventually(lambda: limiter.ready()[1] == "redis", 3)
        assert await total(redis_server.url, token_units(p.key_id)) == 401
    finally:
        await limiter.aclose()
        await link.aclose()
