"""`REDIS_URL=redis+sentinel://`: real gateways on a real Sentinel set of local processes (a
master, a replica, three sentinels). Budgets are exact across two gateways in each failure
mode; the master SIGKILLed under streaming load is replaced without restarting a gateway:
no 5xx but `closed` mode's 503, every slot free within one lease, admissions on the new
master within 10 s of the promotion."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.keyfiles import key_entry, keys_toml
from tests.support.load import StreamingLoad, codes, fire
from tests.support.processes import gateway_env, start_gateways
from tests.support.topologies import counted, live_leases, need_redis_tools, sentinel_set
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

MODES = ("local", "closed")
LEASE_SECONDS = 3


@pytest.fixture(scope="module")
def sentinels(simulator, tmp_path_factory):
    """The Sentinel set, and two gateways on it per failure mode; each test spends keys of
    its own; the one that kills the master runs after the ones that need the first."""
    need_redis_tools()
    workdir = tmp_path_factory.mktemp("redis-sentinel")
    entries = []
    for mode in MODES:
        entries += [
            key_entry(f"exact-{mode}", f"gk-se-exact-{mode}", extra='requests = "60/hour"'),
            key_entry(f"after-{mode}", f"gk-se-after-{mode}", extra='requests = "60/hour"'),
            key_entry(f"t1-{mode}", f"gk-se-t1-{mode}", tenant=f"pair-{mode}"),
            key_entry(f"t2-{mode}", f"gk-se-t2-{mode}", tenant=f"pair-{mode}"),
            key_entry(f"load-{mode}", f"gk-se-load-{mode}", extra="concurrent = 8"),
        ]
    tenants = "".join(f'\n[tenants.pair-{m}]\nrequests = "40/hour"\n' for m in MODES)
    (workdir / "keys.toml").write_text(
        keys_toml(*entries, defaults='requests = "100000/hour"\n' + tenants)
    )
    with sentinel_set(workdir / "set") as group:
        gateways = {}
        for mode in MODES:
            env = gateway_env(
                simulator,
                str(workdir / "keys.toml"),
                REDIS_URL=group.url,
                RATE_LIMIT_FAILURE_MODE=mode,
                CONCURRENCY_LEASE_SECONDS=str(LEASE_SECONDS),
            )
            gateways[mode] = start_gateways(env, 2)
        group.urls = {mode: [g.url for g in procs] for mode, procs in gateways.items()}
        try:
            yield group
        finally:
            for procs in gateways.values():
                for gateway in procs:
                    gateway.stop()


@pytest.mark.parametrize("mode", MODES)
async def test_two_gateways_admit_exactly_a_keys_limit(sentinels, mode):
    responses = await fire(sentinels.urls[mode], f"gk-se-exact-{mode}", 120)
    assert codes(responses) == {200: 60, "rate_limit_exceeded": 60}


@pytest.mark.parametrize("mode", MODES)
async def test_two_keys_share_their_tenants_limit_exactly(sentinels, mode):
    first, second = await asyncio.gather(
        fire(sentinels.urls[mode], f"gk-se-t1-{mode}", 40),
        fire(sentinels.urls[mode], f"gk-se-t2-{mode}", 40),
    )
    assert codes(first).get(200, 0) + codes(second).get(200, 0) == 40


async def test_a_killed_master_is_replaced_under_streaming_load(sentinels):
    await asyncio.to_thread(sentinels.wait_ready)
    loads = {
        mode: StreamingLoad(sentinels.urls[mode], f"gk-se-load-{mode}", workers=6).start()
        for mode in MODES
    }
    await asyncio.sleep(1.5)
    old = sentinels.master_port()
    sentinels.node(old).kill()
    killed = time.monotonic()
    promoted = await asyncio.to_thread(sentinels.wait_promoted, old)
    new = sentinels.master_port()
    before = {
        mode: await asyncio.to_thread(counted, new, f"gw:{{k:load-{mode}}}:req:*") for mode in MODES
    }

    async def admitting_on_the_new_master() -> bool:
        for mode in MODES:
            now = await asyncio.to_thread(counted, new, f"gw:{{k:load-{mode}}}:req:*")
            async with httpx.AsyncClient() as client:
                ready = [(await client.get(f"{u}/readyz")).json() for u in sentinels.urls[mode]]
            if now <= before[mode] or any(r["limiter"] != "redis" for r in ready):
                return False
        return True

    assert await eventually(admitting_on_the_new_master, 10)
    back = time.monotonic()
    await asyncio.sleep(1)
    answers = {mode: await load.stop() for mode, load in loads.items()}
    ended = time.monotonic()

    assert {a.code for a in answers["local"]} <= {200, "concurrency_limit_exceeded"}
    refused = {a.status for a in answers["closed"] if a.code == "rate_limiter_unavailable"}
    assert refused <= {503}
    assert {a.code for a in answers["closed"]} <= {
        200,
        "concurrency_limit_exceeded",
        "rate_limiter_unavailable",
    }
    for mode in MODES:
        assert all(a.complete for a in answers[mode] if a.status == 200)

    async def slots_free() -> bool:
        held = [
            await asyncio.to_thread(live_leases, new, f"gw:{{k:load-{m}}}:conc:load-{m}")
            for m in MODES
        ]
        return held == [0, 0]

    freed = await eventually(slots_free, LEASE_SECONDS)
    print(
        f"sentinel failover: promoted {promoted - killed:.1f}s after the kill, admissions on "
        f"the new master {back - promoted:.1f}s after that, slots free "
        f"{time.monotonic() - ended:.1f}s after the load; closed mode refused "
        f"{sum(a.status == 503 for a in answers['closed'])} with 503"
    )
    assert freed


@pytest.mark.parametrize("mode", MODES)
async def test_budgets_stay_exact_on_the_promoted_master(sentinels, mode):
    responses = await fire(sentinels.urls[mode], f"gk-se-after-{mode}", 90)
    assert codes(responses) == {200: 60, "rate_limit_exceeded": 30}
