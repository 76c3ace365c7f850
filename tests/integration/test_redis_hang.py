"""Redis hangs and comes back: no budget lost or charged twice, no one locked out (SPEC 9).

A hang is a real one: redis-server stopped with SIGSTOP keeps its connections open, and once
SIGCONT resumes it, runs every command queued on them, including those of callers that gave
up long ago. A lost reply is a real TCP relay that stops passing one direction. Short leases
and timeouts keep each test to seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import httpx
import pytest
import redis.asyncio as aioredis

from service.limiter import create_limiter
from service.limiter.base import LimiterUnavailable
from service.limiter.failover import FailoverLimiter
from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy, parse_rates, parse_spend
from service.limiter.redis_store import RedisLimiter
from service.redis.clock import RedisClock
from service.redis.connection import connect
from service.redis.multiplexed import MultiplexedConnection
from service.usage.record import TICKS_PER_USD, Totals
from tests.support.charges import charge
from tests.support.faulty_link import FaultyLink
from tests.support.keyfiles import MODEL, key_entry, keys_toml
from tests.support.limiters import key_policy as policy
from tests.support.processes import (
    Proc,
    RedisServer,
    gateway_env,
    start_gateways,
    start_redis,
)
from tests.support.redis_state import live_slots, request_units, slots, token_units, total
from tests.support.waiting import equals, eventually

pytestmark = pytest.mark.slow

LEASE = 3.0  # CONCURRENCY_LEASE_SECONDS; a hang under 2 leases keeps the slot set alive
TIMEOUT = 0.3  # REDIS_TIMEOUT_SECONDS
SLOTS, LOAD, OTHER = "gk-hang-slots", "gk-hang-load", "gk-hang-other"


@pytest.fixture
def redis_to_hang():
    """A private redis-server this test may stop (SIGSTOP) and resume."""
    server = start_redis()
    yield server
    os.kill(server.popen.pid, signal.SIGCONT)
    server.stop()


def hang(server: RedisServer) -> None:
    os.kill(server.popen.pid, signal.SIGSTOP)


def resume(server: RedisServer) -> None:
    os.kill(server.popen.pid, signal.SIGCONT)


# --- gateways on a hanging Redis ----------------------------------------------------------


def hang_gateways(simulator: Proc, redis: RedisServer, tmp_path, mode: str, n: int) -> list[Proc]:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        keys_toml(
            key_entry("slots", SLOTS, extra="concurrent = 10"),
            key_entry("load", LOAD, extra="concurrent = 1000"),
            key_entry("other", OTHER),
            defaults='requests = "1000000/hour"',
        )
    )
    env = gateway_env(
        simulator,
        str(keys),
        REDIS_URL=redis.url,
        REDIS_TIMEOUT_SECONDS=str(TIMEOUT),
        CONCURRENCY_LEASE_SECONDS=str(LEASE),
        RATE_LIMIT_FAILURE_MODE=mode,
    )
    return start_gateways(env, n)


async def stream(client: httpx.AsyncClient, url: str, secret: str, **sim: int) -> int:
    """One streaming chat request read to its end; its status."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = await client.post(
        f"{url}/api/v1/chat/completions",
        json={**body, "sim": sim},
        headers={"Authorization": f"Bearer {secret}"},
    )
    return response.status_code


async def all_on_redis(client: httpx.AsyncClient, gateways: list[Proc]) -> bool:
    for gateway in gateways:
        if (await client.get(f"{gateway.url}/readyz")).json().get("limiter") != "redis":
            return False
    return True


@pytest.mark.parametrize("mode", ["local", "closed"])
async def test_slots_of_streams_that_ended_during_a_hang_are_free_within_the_lease(
    simulator, redis_to_hang, tmp_path, mode
):
    (gateway,) = hang_gateways(simulator, redis_to_hang, tmp_path, mode, 1)
    url = redis_to_hang.url
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            running = [
                asyncio.ensure_future(stream(client, gateway.url, SLOTS, chunks=15, delay_ms=100))
                for _ in range(10)
            ]
            assert await eventually(lambda: equals(live_slots(url, slots("slots")), 10), 5)
            hang(redis_to_hang)
            hung_at = time.monotonic()
            flipped = [await stream(client, gateway.url, OTHER, chunks=1) for _ in range(3)]
            assert flipped == ([200] * 3 if mode == "local" else [503] * 3)
            assert await asyncio.gather(*running) == [200] * 10  # they end during the hang
            await asyncio.sleep(max(0.0, hung_at + 3.5 - time.monotonic()))
            resume(redis_to_hang)
            assert await eventually(lambda: equals(live_slots(url, slots("slots")), 0), LEASE)
            assert await eventually(lambda: all_on_redis(client, [gateway]), 3)
            again = await asyncio.gather(
                *(stream(client, gateway.url, SLOTS, chunks=2) for _ in range(10))
            )
            assert again == [200] * 10
    finally:
        gateway.stop()


@pytest.mark.parametrize("mode", ["local", "closed"])
async def test_under_load_through_a_hang_redis_counts_exactly_the_requests_answered(
    simulator, redis_to_hang, tmp_path, mode
):
    gateways = hang_gateways(simulator, redis_to_hang, tmp_path, mode, 2)
    url = redis_to_hang.url
    answered: list[tuple[float, float, int]] = []  # (sent, answered, status)

    async def worker(client: httpx.AsyncClient, target: str, until: float) -> None:
        while time.monotonic() < until:
            sent = time.monotonic()
            status = await stream(client, target, LOAD, chunks=4, delay_ms=40)
            answered.append((sent, time.monotonic(), status))
            if status != 200:
                await asyncio.sleep(0.05)  # back off, as clients do on a refusal

    try:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            started = time.monotonic()
            load = asyncio.gather(
                *(worker(client, gateways[i % 2].url, started + 6) for i in range(80))
            )
            await asyncio.sleep(1.5)
            hang(redis_to_hang)
            hung_at = time.monotonic()
            await asyncio.sleep(3)
            resume(redis_to_hang)
            resumed_at = time.monotonic()
            await load
            assert await eventually(lambda: all_on_redis(client, gateways), 3)
        assert await eventually(lambda: equals(live_slots(url, slots("load")), 0), LEASE)
        ok = sum(1 for _, _, status in answered if status == 200)
        assert await total(url, request_units("load")) == ok
        # Sent after the hang began and answered before it ended, whatever the client's lag:
        during = [status for sent, done, status in answered if hung_at < sent < done < resumed_at]
        if mode == "closed":
            assert during and set(during) == {503}
        else:
            assert during and set(during) == {200}
    finally:
        for gateway in gateways:
            gateway.stop()


# --- the limiter on a hanging Redis -------------------------------------------------------


def redis_limiter(url: str, **kwargs) -> RedisLimiter:
    return RedisLimiter(
        connect(url, TIMEOUT),
        multiplexed=MultiplexedConnection.from_url(url, TIMEOUT),
        timeout=TIMEOUT,
        **kwargs,
    )


@pytest.mark.parametrize("skew", [0, 3600, -3600], ids=["same-clock", "ahead", "behind"])
async def test_an_admission_given_up_during_a_pause_never_takes_effect(redis_server, skew):
    """Redis runs the script after the pause; the caller's deadline makes it consume nothing."""
    limiter = redis_limiter(
        redis_server.url, clock=RedisClock(lambda: time.monotonic() + skew), lease_seconds=30
    )
    p = policy(conc=5)
    admin = aioredis.from_url(redis_server.url)
    try:
        await limiter.start()
        await limiter.ping()  # learns Redis's clock
        assert (await limiter.admit(p)).allowed
        await admin.execute_command("CLIENT", "PAUSE", "700", "ALL")
        with pytest.raises(Exception, match="no reply from Redis"):
            await limiter.admit(p)
        await asyncio.sleep(0.8)  # the pause ends: Redis runs the queued admission now
        assert await total(redis_server.url, request_units(p.key_id)) == 1
        assert await live_slots(redis_server.url, slots(p.key_id)) == 1
        assert (await limiter.admit(p)).allowed  # and admissions go on as before
    finally:
        await admin.aclose()
        await limiter.aclose()


async def test_charges_counted_in_memory_during_a_hang_reach_redis_when_it_answers(
    redis_to_hang,
):
    url = redis_to_hang.url
    limiter = create_limiter(url, failure_mode="local", redis_timeout=TIMEOUT)
    p = policy(tokens="1000000/hour", conc=5)
    try:
        await limiter.start()
        await limiter.release(p, await limiter.admit(p), charge(10))
        hang(redis_to_hang)
        fallback = [await limiter.admit(p) for _ in range(3)]
        assert [d.store for d in fallback] == ["memory"] * 3
        for decision in fallback:
            await limiter.release(p, decision, charge(100))
        resume(redis_to_hang)
        assert await eventually(lambda: limiter.ready()[1] == "redis", 3)
        assert await total(url, request_units(p.key_id)) == 4
        assert await total(url, token_units(p.key_id)) == 310
        assert await live_slots(url, slots(p.key_id)) == 0
    finally:
        await limiter.aclose()


async def test_ledger_spend_and_ownership_recorded_during_a_hang_reach_redis(redis_to_hang):
    url = redis_to_hang.url
    limiter = create_limiter(url, failure_mode="local", redis_timeout=TIMEOUT)
    other_replica = redis_limiter(url)
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    p = LimitPolicy(
        key_id="a", tenant=tenant, requests=parse_rates("100/hour"), spend=parse_spend("10/day")
    )
    try:
        await limiter.start()
        hang(redis_to_hang)
        creating = await limiter.admit(p)
        assert creating.store == "memory"
        await limiter.release(p, creating, charge(40, 3 * TICKS_PER_USD, record="resp_hang"))
        reading = await limiter.admit(p, ("resp_hang",))  # ownership from memory
        assert reading.allowed
        await limiter.release(p, reading, charge(8, 1))
        resume(redis_to_hang)
        assert await eventually(lambda: limiter.ready()[1] == "redis", 3)
        snapshot = await other_replica.usage_snapshot(p)
        assert snapshot.key_today == Totals(2, 36, 0, 12, 0, 3 * TICKS_PER_USD + 1)
        assert snapshot.tenant_today == snapshot.key_today
        spend = next(s for s in snapshot.limits if s.kind == "spend")
        assert spend.remaining == 7 * TICKS_PER_USD - 1
        assert (await other_replica.admit(p, ("resp_hang",))).allowed
    finally:
        await limiter.aclose()
        await other_replica.aclose()


async def test_a_release_whose_reply_was_lost_counts_once_and_a_deferred_one_is_not_lost(
    redis_server,
):
    link = FaultyLink(redis_server.port)
    limiter = create_limiter(await link.start(), failure_mode="local", redis_timeout=TIMEOUT)
    p = policy(tokens="1000000/hour")
    try:
        await limiter.start()
        await limiter.release(p, await limiter.admit(p), charge(1))  # both scripts loaded
        applied, deferred = await limiter.admit(p), await limiter.admit(p)
        link.replies_pass = False
        await limiter.release(p, applied, charge(500))  # Redis applies it; the reply never arrives
        assert limiter.ready()[1].startswith("local fallback")
        await limiter.release(p, deferred, charge(30))  # Redis is known down: kept for later
        assert await total(redis_server.url, token_units(p.key_id)) == 501
        link.heal()
        assert await eventually(lambda: limiter.ready()[1] == "redis", 3)
        assert await total(redis_server.url, token_units(p.key_id)) == 531
    finally:
        await limiter.aclose()
        await link.aclose()


async def test_a_slot_whose_release_could_not_be_kept_frees_within_the_lease(redis_to_hang):
    """Even with no room to keep the release for later, the slot is not refreshed forever."""
    url = redis_to_hang.url
    store = redis_limiter(url, lease_seconds=1.5, replay_limit=0)
    limiter = FailoverLimiter(store, MemoryLimiter(1.5), "local")
    p = policy(conc=2)
    try:
        await limiter.start()
        held = [await limiter.admit(p), await limiter.admit(p)]
        hang(redis_to_hang)
        for decision in held:  # the first times out, the second finds Redis known down
            await limiter.release(p, decision, charge())
        await asyncio.sleep(2.0)  # over the lease: the refresher would have renewed them
        resume(redis_to_hang)
        assert await eventually(lambda: equals(live_slots(url, slots(p.key_id)), 0), 1.8)
    finally:
        await limiter.aclose()


async def rel_marker(url: str, key_id: str, admission: str) -> bytes | None:
    client = aioredis.from_url(url)
    try:
        return await client.get(f"gw:{{k:{key_id}}}:rel:{admission}")
    finally:
        await client.aclose()


@pytest.mark.parametrize("mode", ["local", "closed"])
async def test_an_admission_whose_reply_was_lost_is_not_charged(redis_server, mode):
    """The script ran (windows counted, lease added) but its reply never came: the gateway
    answered 503 or admitted the request from memory (whose own unit is replayed), so once
    Redis answers again the lost admission is taken back and the request counts at most once."""
    link = FaultyLink(redis_server.port)
    limiter = create_limiter(
        await link.start(), failure_mode=mode, lease_seconds=30, redis_timeout=TIMEOUT
    )
    p = policy(requests="1000/hour;100000/day", conc=5)
    units = request_units(p.key_id)  # two windows: 2 units a request
    try:
        await limiter.start()
        await limiter.release(p, await limiter.admit(p), charge(1))  # both scripts loaded
        assert await total(redis_server.url, units) == 2
        link.replies_pass = False
        if mode == "local":
            served = await limiter.admit(p)  # Redis admits it; the reply never arrives
            assert served.store == "memory" and served.allowed
            await limiter.release(p, served, charge(1))  # Redis is known down: kept
        else:
            with pytest.raises(LimiterUnavailable):
                await limiter.admit(p)
        assert limiter.ready()[1] != "redis"
        assert await total(redis_server.url, units) == 4  # Redis did count the lost one
        assert await live_slots(redis_server.url, slots(p.key_id)) == 1
        link.heal()
        assert await eventually(lambda: limiter.ready()[1] == "redis", 3)
        assert await total(redis_server.url, units) == (4 if mode == "local" else 2)
        assert await live_slots(redis_server.url, slots(p.key_id)) == 0
        later = await limiter.admit(p)
        assert later.store == "redis"
        await limiter.release(p, later, charge(1))
        assert await total(redis_server.url, units) == (6 if mode == "local" else 4)
    finally:
        await limiter.aclose()
        await link.aclose()


async def test_an_admission_that_never_ran_is_not_taken_back(redis_to_hang):
    """Given up before Redis ran it (then past its deadline, it does nothing): the cancel that
    follows finds no admission to take back and leaves the counters as they were."""
    url = redis_to_hang.url
    store = redis_limiter(url, lease_seconds=30)
    p = policy(requests="1000/hour;100000/day", conc=5)
    units = request_units(p.key_id)
    try:
        await store.start()
        await store.ping()  # learns Redis's clock: admissions carry a deadline
        await store.release(p, await store.admit(p), charge(1))
        held = await store.admit(p)  # admitted, not yet released: a slot and 2 more units
        assert await total(url, units) == 4
        hang(redis_to_hang)
        with pytest.raises(Exception, match="no reply from Redis"):
            await store.admit(p)
        assert store.pending == 1  # the given-up admission, kept to be taken back
        resume(redis_to_hang)
        await asyncio.sleep(0.1)  # Redis runs the queued script: past its deadline, nothing
        await store.reset_connections()
        assert await store.replay() == 1
        assert await total(url, units) == 4
        assert await live_slots(url, slots(p.key_id)) == 1  # the held slot only
        await store.release(p, held, charge(1))
        assert await total(url, units) == 4
        assert await live_slots(url, slots(p.key_id)) == 0
        assert await rel_marker(url, p.key_id, held.id) == b"r"
    finally:
        await store.aclose()
