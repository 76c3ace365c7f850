"""Money across replicas: several real processes on one real Redis.

Limiter processes charge known costs concurrently (the simulator does not report costs
yet); gateway processes serve real streams and answer spent budgets.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.limiter.policy import LimitPolicy, parse_spend
from service.limiter.redis_store import RedisLimiter
from service.redis.connection import connect
from service.redis.multiplexed import MultiplexedConnection
from service.usage.record import TICKS_PER_USD, Totals
from tests.support.charges import charge, ledger_of
from tests.support.keyfiles import MODEL, key_entry, keys_toml
from tests.support.processes import (
    REPO,
    Proc,
    gateway_env,
    start_gateways,
    start_redis,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_redis():
    server = start_redis()
    yield server
    server.stop()


def run_workers(script: str, *args: str, processes: int = 4) -> list[dict]:
    """Run `script` in `processes` Python processes at once; their JSON outputs."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args, str(n)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for n in range(processes)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    return [json.loads(out) for out in outputs]


_CHARGING = """
import asyncio, json, random, sys
from service.limiter import create_limiter
from service.limiter.policy import LimitPolicy, parse_rates
from service.usage.record import Charge, Usage

async def main(url, tenant, n, seed):
    lim = create_limiter(url, redis_timeout=5)
    await lim.start()
    rng = random.Random(seed)
    policies = [LimitPolicy(key_id=k, tenant=tenant, requests=parse_rates("100000/hour"))
                for k in ("a", "b")]
    charges = []
    for i in range(n):
        inputs = rng.randrange(2000)
        usage = Usage(input_tokens=inputs, cached_input_tokens=rng.randrange(inputs + 1),
                      output_tokens=rng.randrange(500), reasoning_tokens=rng.randrange(300))
        usage.total_tokens = usage.input_tokens + usage.output_tokens + usage.reasoning_tokens
        charges.append((policies[i % 2], Charge(usage, "grok-4", rng.randrange(10**9), True)))

    async def one(policy, charge):
        decision = await lim.admit(policy)
        assert decision.allowed
        await lim.release(policy, decision, charge)

    await asyncio.gather(*(one(p, c) for p, c in charges))
    sums = {"a": [0] * 6, "b": [0] * 6}
    for p, c in charges:
        u = c.usage
        row = (1, u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens,
               c.cost_ticks)
        sums[p.key_id] = [s + v for s, v in zip(sums[p.key_id], row)]
    print(json.dumps(sums))
    await lim.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def replica(url: str) -> RedisLimiter:
    return RedisLimiter(connect(url), multiplexed=MultiplexedConnection.from_url(url))


async def test_charges_from_four_processes_sum_exactly_in_the_ledger_and_the_sums(fresh_redis):
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    sent = run_workers(_CHARGING, fresh_redis.url, tenant, "150")  # 600 requests at once
    expected = {
        key: Totals(*(sum(out[key][i] for out in sent) for i in range(6))) for key in ("a", "b")
    }
    reader = replica(fresh_redis.url)
    try:
        today = datetime.now(UTC).date()
        rows = await ledger_of(reader).rows(today - timedelta(days=1), today, tenant=tenant)
        assert {r.key: r.totals for r in rows} == expected
        snapshot = await reader.usage_snapshot(LimitPolicy(key_id="a", tenant=tenant))
        assert snapshot.key_month == expected["a"]
        assert snapshot.tenant_today == expected["a"] + expected["b"]
    finally:
        await reader.aclose()


_SPENDING = """
import asyncio, json, sys
from service.limiter import create_limiter
from service.limiter.policy import LimitPolicy, parse_rates, parse_spend
from service.usage.record import Charge, Usage

async def main(url, tenant, cost):
    lim = create_limiter(url, redis_timeout=5)
    await lim.start()
    policies = [LimitPolicy(key_id=k, tenant=tenant, requests=parse_rates("100000/hour"),
                            tenant_spend=parse_spend("1/day")) for k in ("a", "b")]
    charged, refusals = [], set()

    async def spender(policy):
        while True:
            decision = await lim.admit(policy)
            if not decision.allowed:
                refusals.add(decision.reason)
                return
            await asyncio.sleep(0.002)  # in flight a moment, as a request is
            await lim.release(policy, decision, Charge(Usage(), "m", cost, True))
            charged.append(cost)

    await asyncio.gather(*(spender(policies[i % 2]) for i in range(20)))
    print(json.dumps({"charged": len(charged), "refusals": sorted(refusals)}))
    await lim.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_a_tenant_spend_budget_overshoots_only_by_requests_in_flight(fresh_redis):
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    cent = TICKS_PER_USD // 100
    outs = run_workers(_SPENDING, fresh_redis.url, tenant, str(cent))  # 4 x 20 spenders
    charged = sum(out["charged"] for out in outs)
    assert {r for out in outs for r in out["refusals"]} == {"spend_limit_exceeded"}
    assert 100 <= charged < 100 + 80  # $1: 100 cents, plus at most one in flight per spender
    reader = replica(fresh_redis.url)
    try:
        snapshot = await reader.usage_snapshot(LimitPolicy(key_id="a", tenant=tenant))
        assert snapshot.tenant_today == Totals(requests=charged, cost_ticks=charged * cent)
    finally:
        await reader.aclose()


# --- gateways --------------------------------------------------------------------------------

ACME_1, ACME_2, SOLO, FREE = "gk-spend-acme-1", "gk-spend-acme-2", "gk-spend-solo", "gk-spend-free"


def start_replicas(simulator: Proc, redis_url: str, tmp_path, n: int = 3) -> list[Proc]:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        keys_toml(
            key_entry("acme-1", ACME_1, tenant="acme"),
            key_entry("acme-2", ACME_2, tenant="acme"),
            key_entry("solo", SOLO, extra='spend = "0.5/day"'),
            key_entry("free", FREE),
            defaults=(
                'requests = "100000/hour"\n\n'
                '[tenants.acme]\nrequests = "150/hour"\nspend = "1/day;20/month"'
            ),
        )
    )
    env = gateway_env(simulator, str(keys), REDIS_URL=redis_url)
    return start_gateways(env, n)


async def fire(
    urls: list[str], secrets: list[str], n: int, stream: bool = True
) -> list[httpx.Response]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:
        targets = zip(itertools.cycle(urls), itertools.cycle(secrets))
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/api/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {secret}"},
                )
                for url, secret in itertools.islice(targets, n)
            )
        )


def seconds_to_midnight_utc() -> float:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - now).total_seconds()


async def test_every_replica_refuses_once_a_spend_budget_is_spent(simulator, fresh_redis, tmp_path):
    gateways = start_replicas(simulator, fresh_redis.url, tmp_path)
    urls = [g.url for g in gateways]
    spender = replica(fresh_redis.url)
    try:
        acme = LimitPolicy(key_id="acme-1", tenant="acme")
        await spender.release(acme, await spender.admit(acme), charge(cost=TICKS_PER_USD))
        solo = LimitPolicy(key_id="solo", tenant=None, spend=parse_spend("0.5/day"))
        await spender.release(solo, await spender.admit(solo), charge(cost=TICKS_PER_USD // 2))
        refused = await fire(urls, [ACME_1, ACME_2, SOLO], 12)  # each key on every replica
        for response in refused:
            assert response.status_code == 429
            assert response.json()["error"]["code"] == "spend_limit_exceeded"
            assert response.headers["x-should-retry"] == "false"
            assert abs(int(response.headers["retry-after"]) - seconds_to_midnight_utc()) <= 2
        assert "tenant budget $1/day" in refused[0].json()["error"]["message"]
        assert [r.status_code for r in await fire(urls, [FREE], 3)] == [200] * 3
    finally:
        await spender.aclose()
        for gateway in gateways:
            gateway.stop(signal.SIGKILL)


async def test_the_ledger_counts_each_request_answered_across_three_replicas(
    simulator, fresh_redis, tmp_path
):
    gateways = start_replicas(simulator, fresh_redis.url, tmp_path)
    # Not streamed: on this branch the stream relay reports only total tokens.
    responses = await fire([g.url for g in gateways], [ACME_1, ACME_2], 240, stream=False)
    logged = []
    for gateway in gateways:
        gateway.stop()
        logged += [json.loads(line) for line in gateway.output.splitlines() if '"access"' in line]
    answered = {200: 0, 429: 0}
    for response in responses:
        answered[response.status_code] += 1
    assert answered == {200: 150, 429: 90}  # the tenant's 150/hour, once across replicas
    reader = replica(fresh_redis.url)
    try:
        today = datetime.now(UTC).date()
        rows = await ledger_of(reader).rows(today - timedelta(days=1), today, tenant="acme")
    finally:
        await reader.aclose()
    assert {r.model for r in rows} == {MODEL}
    for key in ("acme-1", "acme-2"):
        served = [e for e in logged if e["key_id"] == key and e["status"] == 200]
        (row,) = [r for r in rows if r.key == key]
        assert row.totals.requests == len(served)
        assert row.totals.input_tokens + row.totals.output_tokens == sum(
            e["tokens"] for e in served
        )
