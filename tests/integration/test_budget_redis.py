"""The Redis store against a real redis-server (the fixture starts a private one)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from service.limiter import LimiterUnavailable, create_limiter
from service.limiter.policy import LimitPolicy, parse_rates
from service.limiter.redis_store import RedisLimiter
from service.redis.connection import connect
from service.redis.multiplexed import MultiplexedConnection
from tests.support.charges import charge, count_round_trips, ledger_of
from tests.support.processes import REPO, start_redis


def policy(requests="1000/hour", conc=None, tokens="", key=None) -> LimitPolicy:
    return LimitPolicy(
        key_id=key or uuid.uuid4().hex[:12],  # a fresh key per test: no shared counters
        tenant=None,
        requests=parse_rates(requests),
        tokens=parse_rates(tokens) if tokens else (),
        concurrent=conc,
    )


# Admit and release run over the multiplexed connection (redis:// and unix:// URLs) or
# through redis-py's scripts (TLS, Sentinel, Cluster): both are tested.
CLIENTS = ["multiplexed", "redis-py"]


def make_limiter(url: str, client: str, timeout: float = 1.0, **kwargs) -> RedisLimiter:
    multiplexed = MultiplexedConnection.from_url(url, timeout) if client == "multiplexed" else None
    return RedisLimiter(connect(url, timeout), multiplexed=multiplexed, **kwargs)


@pytest.fixture(params=CLIENTS)
async def limiter(request, redis_server):
    lim = make_limiter(redis_server.url, request.param, lease_seconds=30)
    await lim.start()
    yield lim
    await lim.aclose()


@pytest.mark.parametrize("client", CLIENTS)
async def test_2000_concurrent_admissions_admit_exactly_1000(redis_server, client):
    # A generous timeout: this test is about exactness, not about a busy machine's latency.
    limiter = make_limiter(redis_server.url, client, timeout=5, lease_seconds=30)
    p = policy("1000/hour")
    decisions = await asyncio.gather(*(limiter.admit(p) for _ in range(2000)))
    await limiter.aclose()
    assert sum(d.allowed for d in decisions) == 1000


_WORKER = """
import asyncio, sys
from service.limiter import create_limiter
from service.limiter.policy import LimitPolicy, parse_rates

async def main(url, key):
    lim = create_limiter(url, redis_timeout=5)
    await lim.start()
    p = LimitPolicy(key_id=key, tenant=None, requests=parse_rates("1000/hour"))
    decisions = await asyncio.gather(*(lim.admit(p) for _ in range(500)))
    print(sum(d.allowed for d in decisions))
    await lim.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_four_processes_share_one_budget_exactly(redis_server):
    key = uuid.uuid4().hex[:12]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, redis_server.url, key],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(4)
    ]
    admitted = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(admitted) == 1000


async def commandstats(url: str) -> dict[str, int]:
    client = aioredis.from_url(url)
    stats = await client.info("commandstats")
    await client.aclose()
    return {name: value["calls"] for name, value in stats.items()}


async def test_one_round_trip_to_admit_and_one_to_release(limiter, redis_server):
    p = policy("10/minute;1000/hour;10000/day", conc=5, tokens="100000/day")
    await limiter.release(p, await limiter.admit(p), charge(10))  # load the scripts
    sent = count_round_trips(limiter)
    before = await commandstats(redis_server.url)
    decision = await limiter.admit(p)
    assert sent == ["EVALSHA"]
    await limiter.release(p, decision, charge(25))
    assert sent == ["EVALSHA", "EVALSHA"]
    after = await commandstats(redis_server.url)
    assert after["cmdstat_evalsha"] - before["cmdstat_evalsha"] == 2


async def test_a_release_without_lease_or_tokens_still_writes_its_ledger_row_in_one_trip(
    limiter,
):
    p = policy("1000/hour")
    decision = await limiter.admit(p)
    sent = count_round_trips(limiter)
    await limiter.release(p, decision, charge(model="grok-ledger"))
    assert sent == ["EVALSHA"]
    today = datetime.now(UTC).date()
    rows = await ledger_of(limiter).rows(today - timedelta(days=1), today, key=p.key_id)
    assert [(r.key, r.model, r.totals.requests) for r in rows] == [(p.key_id, "grok-ledger", 1)]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_dead_replicas_slot_frees_itself_within_the_lease(redis_server, client):
    p = policy(conc=1)
    dying = make_limiter(redis_server.url, client, lease_seconds=1)
    assert (await dying.admit(p)).allowed
    await dying.aclose()  # gone without releasing, like a killed process
    survivor = make_limiter(redis_server.url, client, lease_seconds=1)
    assert not (await survivor.admit(p)).allowed
    await asyncio.sleep(1.2)
    assert (await survivor.admit(p)).allowed
    await survivor.aclose()


async def test_a_live_lease_is_refreshed_past_its_lease_time(redis_server):
    p = policy(conc=1)
    holder = RedisLimiter(connect(redis_server.url), lease_seconds=0.6)
    await holder.start()
    held = await holder.admit(p)
    await asyncio.sleep(1.5)  # over twice the lease: only refreshing keeps it
    other = RedisLimiter(connect(redis_server.url), lease_seconds=0.6)
    assert not (await other.admit(p)).allowed
    await holder.release(p, held, charge())
    assert (await other.admit(p)).allowed
    await holder.aclose()
    await other.aclose()


@pytest.fixture
def own_redis():
    """A private redis-server this test may kill and restart on the same port."""
    server = start_redis()
    yield server
    server.stop()


async def wait_until(predicate, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_local_mode_counts_in_memory_while_redis_is_down_and_returns(own_redis):
    lim = create_limiter(own_redis.url, failure_mode="local", redis_timeout=0.2)
    await lim.start()
    p = policy("1000/hour")
    assert (await lim.admit(p)).store == "redis"
    own_redis.stop()
    decision = await lim.admit(p)
    assert decision.allowed and decision.store == "memory"
    assert lim.ready() == (True, "local fallback: redis unreachable, counting per replica")
    await lim.release(p, decision, charge())
    restarted = start_redis(own_redis.port)
    try:
        assert await wait_until(lambda: lim.ready()[1] == "redis")
        assert (await lim.admit(p)).store == "redis"
    finally:
        restarted.stop()
        await lim.aclose()


async def test_closed_mode_refuses_while_redis_is_down(own_redis):
    lim = create_limiter(own_redis.url, failure_mode="closed", redis_timeout=0.2)
    await lim.start()
    own_redis.stop()
    with pytest.raises(LimiterUnavailable):
        await lim.admit(policy())
    assert lim.ready() == (False, "redis unreachable")
    restarted = start_redis(own_redis.port)
    try:
        assert await wait_until(lambda: lim.ready()[0])
        assert (await lim.admit(policy())).allowed
    finally:
        restarted.stop()
        await lim.aclose()


async def test_start_with_redis_down_serves_in_local_mode():
    from tests.support.processes import free_port

    lim = create_limiter(f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.2)
    await lim.start()
    assert lim.ready()[1].startswith("local fallback")
    assert (await lim.admit(policy())).allowed
    await lim.aclose()
