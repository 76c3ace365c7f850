"""One budget across replicas: several real gateway processes on one real Redis."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import httpx
import pytest

from tests.support.keyfiles import MODEL, key_entry, keys_toml
from tests.support.processes import (
    RedisServer,
    gateway_env,
    start_gateways,
    start_redis,
)
from tests.support.redis_state import live_slots, slots
from tests.support.waiting import equals, eventually

pytestmark = pytest.mark.slow

A, B, C, D = "gk-replica-a", "gk-replica-b", "gk-replica-c", "gk-replica-d"
A2 = "gk-replica-a2"  # A's budget, for the test that spends A's own beside B


def body(**sim) -> dict:
    doc = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if sim:
        doc["sim"] = sim
    return doc


async def fire(urls: list[str], secret: str, n: int, **sim) -> list[httpx.Response]:
    """n concurrent streaming requests, spread round-robin over the replicas."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        targets = itertools.islice(itertools.cycle(urls), n)
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/api/v1/chat/completions",
                    json=body(**sim),
                    headers={"Authorization": f"Bearer {secret}"},
                )
                for url in targets
            )
        )


async def readyz(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"{url}/readyz")


def codes(responses: list[httpx.Response]) -> dict[object, int]:
    out: dict[object, int] = {}
    for r in responses:
        label = r.status_code if r.status_code == 200 else r.json()["error"]["code"]
        out[label] = out.get(label, 0) + 1
    return out


class Cluster:
    def __init__(self, simulator, redis: RedisServer, tmp_path, replicas: int = 3, **env) -> None:
        keys = tmp_path / "keys.toml"
        keys.write_text(
            keys_toml(
                key_entry("a", A, extra='requests = "60/hour"'),
                key_entry("a2", A2, extra='requests = "60/hour"'),
                key_entry("b", B, extra='requests = "60/hour"'),
                key_entry("c", C, extra='requests = "100000/hour"\nconcurrent = 5'),
                key_entry("d", D),
                key_entry("t1", "gk-t1", tenant="shared"),
                key_entry("t2", "gk-t2", tenant="shared"),
                defaults='requests = "100000/hour"\n\n[tenants.shared]\nrequests = "40/hour"',
            )
        )
        env = gateway_env(simulator, str(keys), REDIS_URL=redis.url, **env)
        self.procs = start_gateways(env, replicas)
        self.urls = [p.url for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(signal.SIGKILL)


@pytest.fixture
def fresh_redis():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(simulator, tmp_path_factory):
    """Three replicas on a Redis of their own, shared by the tests that stop nothing: each
    spends the budgets of keys no other test uses."""
    redis = start_redis()
    group = Cluster(simulator, redis, tmp_path_factory.mktemp("cluster"))
    yield group
    group.stop()
    redis.stop()


async def test_three_replicas_admit_exactly_the_key_limit(cluster):
    responses = await fire(cluster.urls, A, 240)
    assert codes(responses) == {200: 60, "rate_limit_exceeded": 180}
    assert all(r.text.endswith("data: [DONE]\n\n") for r in responses if r.status_code == 200)
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


async def test_another_keys_budget_is_untouched(cluster):
    await fire(cluster.urls, A2, 120)
    assert codes(await fire(cluster.urls, B, 60)) == {200: 60}


async def test_concurrency_cap_holds_across_replicas(cluster):
    responses = await fire(cluster.urls, C, 30, chunks=10, delay_ms=100)
    assert codes(responses) == {200: 5, "concurrency_limit_exceeded": 25}


async def test_tenant_budget_is_shared_by_its_keys_across_replicas(cluster):
    first, second = await asyncio.gather(
        fire(cluster.urls, "gk-t1", 50), fire(cluster.urls, "gk-t2", 50)
    )
    admitted = codes(first).get(200, 0) + codes(second).get(200, 0)
    assert admitted == 40


async def test_a_killed_replicas_slot_frees_within_the_lease(simulator, fresh_redis, tmp_path):
    group = Cluster(simulator, fresh_redis, tmp_path, replicas=2, CONCURRENCY_LEASE_SECONDS="2")
    try:
        # Hold all five of key C's slots on replica 0, then kill it mid-stream.
        holding = asyncio.ensure_future(fire(group.urls[:1], C, 5, chunks=100, delay_ms=100))
        held = slots("c")
        assert await eventually(lambda: equals(live_slots(fresh_redis.url, held), 5), 5)
        os.kill(group.procs[0].popen.pid, signal.SIGKILL)
        refused = await fire(group.urls[1:], C, 1)
        assert codes(refused) == {"concurrency_limit_exceeded": 1}
        assert await eventually(lambda: equals(live_slots(fresh_redis.url, held), 0), 2.5)
        assert codes(await fire(group.urls[1:], C, 5)) == {200: 5}
        holding.cancel()
    finally:
        group.stop()


async def test_local_mode_serves_through_a_redis_outage_and_resumes(
    simulator, fresh_redis, tmp_path
):
    group = Cluster(simulator, fresh_redis, tmp_path, REDIS_TIMEOUT_SECONDS="0.2")
    try:
        assert codes(await fire(group.urls, D, 30)) == {200: 30}
        fresh_redis.stop()
        assert codes(await fire(group.urls, D, 60)) == {200: 60}
        ready = (await readyz(group.urls[0])).json()
        assert ready["limiter"].startswith("local fallback")
        restarted = start_redis(fresh_redis.port)
        try:
            deadline = time.monotonic() + 6
            states: list[str] = []
            while time.monotonic() < deadline:
                states = [(await readyz(url)).json()["limiter"] for url in group.urls]
                if states == ["redis"] * len(group.urls):
                    break
                await asyncio.sleep(0.2)
            assert states == ["redis"] * len(group.urls)
            # Shared counting again: key A's 60/hour holds across all three replicas.
            assert codes(await fire(group.urls, A, 90)) == {200: 60, "rate_limit_exceeded": 30}
        finally:
            restarted.stop()
    finally:
        group.stop()


async def test_closed_mode_answers_503_while_redis_is_down(simulator, fresh_redis, tmp_path):
    group = Cluster(
        simulator,
        fresh_redis,
        tmp_path,
        replicas=2,
        RATE_LIMIT_FAILURE_MODE="closed",
        REDIS_TIMEOUT_SECONDS="0.2",
    )
    try:
        assert codes(await fire(group.urls, D, 4)) == {200: 4}
        fresh_redis.stop()
        assert codes(await fire(group.urls, D, 10)) == {"rate_limiter_unavailable": 10}
        assert (await readyz(group.urls[0])).status_code == 503
    finally:
        group.stop()
