"""`REDIS_URL=redis+cluster://`: two real gateways on a real Redis Cluster of six local
`redis-server` processes (3 masters, 3 replicas). Budgets are exact as on one Redis, no
script crosses slots, stored responses stay their tenant's, the admin export reads every
master, tenants spread over the masters, and a master killed under load is replaced with
no 5xx."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.keyfiles import MODEL, key_entry, keys_toml
from tests.support.load import StreamingLoad, auth, codes, fire
from tests.support.processes import gateway_env, start_gateways
from tests.support.topologies import (
    counted,
    live_leases,
    names_on,
    need_redis_tools,
    redis_cluster,
)
from tests.support.usage import admin_entry
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

ADMIN = "gk-cluster-admin-0123"
SPREAD = [f"spread-{i}" for i in range(12)]  # tenants with a key each
LEASE_SECONDS = 3


@pytest.fixture(scope="module")
def cluster(simulator, tmp_path_factory):
    """The Cluster and two gateways on it (local failure mode), shared by the module: each
    test spends keys no other test uses; the one that kills a master runs last."""
    need_redis_tools()
    workdir = tmp_path_factory.mktemp("redis-cluster")
    entries = [
        key_entry("exact", "gk-cl-exact", extra='requests = "60/hour"'),
        key_entry("t1", "gk-cl-t1", tenant="pair"),
        key_entry("t2", "gk-cl-t2", tenant="pair"),
        key_entry("acme-1", "gk-cl-acme-1", tenant="acme"),
        key_entry("acme-2", "gk-cl-acme-2", tenant="acme"),
        key_entry("globex", "gk-cl-globex", tenant="globex"),
        key_entry("load", "gk-cl-load", extra="concurrent = 8"),
        key_entry("long", "gk-cl-long", tenant="long", extra="concurrent = 1"),
        *(key_entry(t, f"gk-cl-{t}", tenant=t) for t in SPREAD),
    ]
    (workdir / "keys.toml").write_text(
        keys_toml(
            *entries,
            defaults='requests = "100000/hour"\n\n[tenants.pair]\nrequests = "40/hour"',
        )
        + admin_entry("ops", ADMIN)
    )
    with redis_cluster(workdir / "nodes") as nodes:
        env = gateway_env(
            simulator,
            str(workdir / "keys.toml"),
            REDIS_URL=nodes.url,
            RATE_LIMIT_FAILURE_MODE="local",
            CONCURRENCY_LEASE_SECONDS=str(LEASE_SECONDS),
        )
        gateways = start_gateways(env, 2)
        nodes.gateways = gateways
        nodes.urls = [g.url for g in gateways]
        try:
            yield nodes
        finally:
            for gateway in gateways:
                gateway.stop()


async def test_two_gateways_admit_exactly_a_keys_limit(cluster):
    responses = await fire(cluster.urls, "gk-cl-exact", 120)
    assert codes(responses) == {200: 60, "rate_limit_exceeded": 60}
    assert all(r.text.endswith("data: [DONE]\n\n") for r in responses if r.status_code == 200)


async def test_two_keys_share_their_tenants_limit_exactly(cluster):
    first, second = await asyncio.gather(
        fire(cluster.urls, "gk-cl-t1", 40), fire(cluster.urls, "gk-cl-t2", 40)
    )
    assert codes(first).get(200, 0) + codes(second).get(200, 0) == 40
    # the key's and its tenant's counters are one slot's: the tenant's hash tag
    assert counted(cluster.master_of("{t:pair}").port, "gw:{t:pair}:req:t:pair:*") == 40


def test_a_stored_response_is_its_tenants_on_either_gateway(cluster):
    created = httpx.post(
        f"{cluster.urls[0]}/api/v1/responses",
        json={"model": MODEL, "input": "Tell me a story"},
        headers=auth("gk-cl-acme-1"),
        timeout=30,
    )
    assert created.status_code == 200, created.text
    path = f"/api/v1/responses/{created.json()['id']}"
    mine = httpx.get(cluster.urls[1] + path, headers=auth("gk-cl-acme-2"), timeout=10)
    assert mine.status_code == 200
    theirs = httpx.get(cluster.urls[1] + path, headers=auth("gk-cl-globex"), timeout=10)
    assert theirs.status_code == 404


async def test_a_key_issued_on_one_gateway_admits_on_the_other(cluster):
    """The admin API's key store (its own hash tag, one slot) works on a Cluster."""
    async with httpx.AsyncClient(timeout=10) as client:
        issued = await client.post(
            f"{cluster.urls[0]}/admin/v1/keys",
            json={"id": "issued", "tenant": "acme", "requests": "5/hour"},
            headers=auth(ADMIN),
        )
    assert issued.status_code == 201, issued.text
    secret = issued.json()["secret"]

    async def admitted_on_the_other() -> bool:
        return codes(await fire(cluster.urls[1:], secret, 1)) == {200: 1}

    assert await eventually(admitted_on_the_other, 5)


async def test_the_admin_export_holds_every_masters_tenants(cluster):
    for tenant in SPREAD:
        assert codes(await fire(cluster.urls, f"gk-cl-{tenant}", 2)) == {200: 2}
    today = datetime.now(UTC).date()
    params = {
        "from": str(today - timedelta(days=1)),
        "to": str(today + timedelta(days=1)),
        "group_by": "tenant",
    }

    def exported() -> dict[str, int]:
        answer = httpx.get(
            f"{cluster.urls[0]}/admin/v1/usage", params=params, headers=auth(ADMIN), timeout=10
        )
        assert answer.status_code == 200
        return {r["tenant"]: r["requests"] for r in answer.json()["data"]}

    assert await eventually(lambda: all(exported().get(t) == 2 for t in SPREAD), 10), exported()
    holding = {
        master.port
        for master in cluster.masters()
        if any(names_on(master.port, f"gw:{{t:{t}}}:led:*") for t in SPREAD)
    }
    assert len(holding) == 3  # 12 tenants' ledger rows sit on all three masters


async def test_a_stream_longer_than_its_lease_keeps_its_slot(cluster):
    """The gateway renews its leases on each tenant's master: past one lease, the only slot
    of a key is still taken."""
    holder = asyncio.ensure_future(fire(cluster.urls[:1], "gk-cl-long", 1, chunks=60, delay_ms=100))
    await asyncio.sleep(LEASE_SECONDS * 1.5)
    assert codes(await fire(cluster.urls[1:], "gk-cl-long", 1)) == {"concurrency_limit_exceeded": 1}
    assert codes(await holder) == {200: 1}


async def test_a_killed_master_is_replaced_under_load_with_no_5xx(cluster):
    old = cluster.master_of("{k:load}")
    load = StreamingLoad(cluster.urls, "gk-cl-load", workers=8).start()
    await asyncio.sleep(1.5)
    old.kill()
    killed = time.monotonic()

    def promoted() -> bool:
        try:
            return cluster.master_of("{k:load}").port != old.port
        except LookupError:
            return False

    assert await eventually(lambda: asyncio.to_thread(promoted), 30)
    promoted_at = time.monotonic()
    new = cluster.master_of("{k:load}")
    before = await asyncio.to_thread(counted, new.port, "gw:{k:load}:req:k:load:*")

    async def admitting_on_the_new_master() -> bool:
        now = await asyncio.to_thread(counted, new.port, "gw:{k:load}:req:k:load:*")
        async with httpx.AsyncClient() as client:
            ready = [(await client.get(f"{u}/readyz")).json()["limiter"] for u in cluster.urls]
        return now > before and ready == ["redis", "redis"]

    assert await eventually(admitting_on_the_new_master, 10)
    back = time.monotonic()
    await asyncio.sleep(1)
    answers = await load.stop()
    ended = time.monotonic()
    statuses = {a.code for a in answers}
    assert statuses <= {200, "concurrency_limit_exceeded"}, statuses
    assert all(a.complete for a in answers if a.status == 200)
    assert len([a for a in answers if killed <= a.at <= back and a.status == 200]) > 0

    async def slots_free() -> bool:
        return await asyncio.to_thread(live_leases, new.port, "gw:{k:load}:conc:load") == 0

    freed = await eventually(slots_free, LEASE_SECONDS)
    print(
        f"cluster failover: promoted {promoted_at - killed:.1f}s after the kill, admissions "
        f"on the new master {back - promoted_at:.1f}s after that, slots free "
        f"{time.monotonic() - ended:.1f}s after the load"
    )
    assert freed
