"""A Redis run as shipped (append-only, fsync every second) SIGKILLed under traffic and
started again on its files keeps what was written more than a second before: ledger rows,
spend, stored-response ownership, API-issued keys and their audit. Two real gateways serve
throughout (`local` mode) and answer no 5xx; a third, started after the restart, knows only
what Redis kept."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.keyfiles import MODEL, key_entry, keys_toml
from tests.support.load import StreamingLoad, auth, codes, fire
from tests.support.processes import gateway_env, start_gateways
from tests.support.topologies import need_redis_tools, persistent_redis
from tests.support.usage import PRICES_TOML, admin_entry

pytestmark = pytest.mark.slow

ADMIN = "gk-aof-admin-0123"
KEPT, OTHER, BUSY = "gk-aof-kept", "gk-aof-other", "gk-aof-busy"


def ledger(url: str, **filters: str) -> list[dict]:
    today = datetime.now(UTC).date()
    params = {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}
    answer = httpx.get(
        f"{url}/admin/v1/usage", params={**params, **filters}, headers=auth(ADMIN), timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def usage(url: str, secret: str) -> dict:
    answer = httpx.get(f"{url}/api/v1/usage", headers=auth(secret), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def restarted(simulator, tmp_path_factory):
    """Traffic of tenant `kept`, settled; then Redis SIGKILLed under another key's streaming
    load and started again on its files. Yields what was read before the kill, the load's
    answers and the gateways."""
    need_redis_tools()
    workdir = tmp_path_factory.mktemp("redis-aof")
    (workdir / "keys.toml").write_text(
        keys_toml(
            key_entry("kept", KEPT, tenant="kept", extra='spend = "100/month"'),
            key_entry("other", OTHER, tenant="other"),
            key_entry("busy", BUSY, tenant="busy"),
            defaults='requests = "100000/hour"',
        )
        + PRICES_TOML
        + admin_entry("ops", ADMIN)
    )
    with persistent_redis(workdir / "redis") as redis:
        env = gateway_env(
            simulator,
            str(workdir / "keys.toml"),
            REDIS_URL=redis.url,
            RATE_LIMIT_FAILURE_MODE="local",
        )
        gateways = start_gateways(env, 2)
        urls = [g.url for g in gateways]
        try:
            before = _settle(urls)
            time.sleep(1.2)  # appendfsync everysec: on disk now
            after = asyncio.run(_kill_and_restart(redis, urls))
            # A gateway that never saw the writes: its keys come from Redis alone.
            gateways += start_gateways(env, 1)
            yield before | after | {"urls": urls, "fresh": gateways[-1].url}
        finally:
            for gateway in gateways:
                gateway.stop()


def _settle(urls: list[str]) -> dict:
    """Tenant `kept`'s traffic, ended and in the ledger; what the gateways say of it."""
    assert codes(asyncio.run(fire(urls, KEPT, 6))) == {200: 6}
    created = httpx.post(
        f"{urls[0]}/api/v1/responses",
        json={"model": MODEL, "input": "Keep this"},
        headers=auth(KEPT),
        timeout=30,
    )
    assert created.status_code == 200, created.text
    issued = httpx.post(
        f"{urls[1]}/admin/v1/keys",
        json={"id": "issued", "tenant": "kept", "requests": "50/hour"},
        headers=auth(ADMIN),
        timeout=10,
    )
    assert issued.status_code == 201, issued.text
    deadline = time.monotonic() + 10
    while sum(r["requests"] for r in ledger(urls[1], tenant="kept")) != 7:
        assert time.monotonic() < deadline, "the ledger did not show tenant kept's requests"
        time.sleep(0.1)
    return {
        "ledger": ledger(urls[0], tenant="kept"),
        "usage": usage(urls[0], KEPT),
        "response": created.json()["id"],
        "issued": issued.json()["secret"],
    }


async def _kill_and_restart(redis, urls: list[str]) -> dict:
    """Another key's streams through a SIGKILL of Redis and its start on its files."""
    load = StreamingLoad(urls, BUSY, workers=6).start()
    await asyncio.sleep(2.5)
    redis.kill()
    killed = time.monotonic()
    await asyncio.sleep(0.5)
    await asyncio.to_thread(redis.start)
    await asyncio.sleep(1.5)  # the load goes on through the gateways finding it again
    return {"answers": await load.stop(), "killed": killed}


def test_ledger_rows_written_before_the_kill_are_kept(restarted):
    assert ledger(restarted["urls"][1], tenant="kept") == restarted["ledger"]


def test_spend_written_before_the_kill_is_kept(restarted):
    after = usage(restarted["urls"][1], KEPT)
    assert after["usage"] == restarted["usage"]["usage"]
    spend = next(limit for limit in after["limits"] if limit["kind"] == "spend")
    assert spend["remaining"] < spend["limit"]


def test_stored_response_ownership_is_kept(restarted):
    path = f"/api/v1/responses/{restarted['response']}"
    mine = httpx.get(restarted["urls"][1] + path, headers=auth(KEPT), timeout=10)
    assert mine.status_code == 200
    theirs = httpx.get(restarted["urls"][1] + path, headers=auth(OTHER), timeout=10)
    assert theirs.status_code == 404


def test_the_load_through_the_kill_saw_no_5xx_and_its_settled_part_is_in_the_ledger(restarted):
    answers = restarted["answers"]
    assert {a.code for a in answers} == {200}
    assert all(a.complete for a in answers)
    settled = sum(1 for a in answers if a.at < restarted["killed"] - 1.0)
    counted = sum(r["requests"] for r in ledger(restarted["urls"][0], tenant="busy"))
    assert settled > 0 and counted >= settled


def test_an_api_issued_key_is_kept(restarted):
    key = httpx.get(f"{restarted['fresh']}/admin/v1/keys/issued", headers=auth(ADMIN), timeout=10)
    assert key.status_code == 200
    assert (key.json()["tenant"], key.json()["requests"]) == ("kept", "50/hour")
    assert codes(asyncio.run(fire([restarted["fresh"]], restarted["issued"], 1))) == {200: 1}


def test_the_audit_of_its_issue_is_kept(restarted):
    audit = httpx.get(f"{restarted['fresh']}/admin/v1/audit", headers=auth(ADMIN), timeout=10)
    assert audit.status_code == 200
    records = audit.json()["data"]
    assert [(r["action"], r["target"]) for r in records] == [("key.create", "issued")]
