"""A Redis at its `maxmemory` under `noeviction` refuses writes (OOM) rather than evict money.
The gateway's answer: `closed` mode a 503 that says so, `local` mode the replica's own
limits; never another 5xx; and what it served meanwhile reaches the ledger once Redis has
room again."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis as redis_py
from redis.exceptions import OutOfMemoryError

from tests.support.keyfiles import key_entry, keys_toml
from tests.support.load import auth, chat_body, label
from tests.support.processes import gateway_env, start_gateway, start_redis
from tests.support.topologies import need_redis_tools
from tests.support.usage import admin_entry

pytestmark = pytest.mark.slow

ADMIN = "gk-oom-admin-0123"
CLOSED, LOCAL = "gk-oom-closed", "gk-oom-local"


def chat(url: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/chat/completions", json=chat_body(), headers=auth(secret), timeout=30
    )


@pytest.fixture(scope="module")
def full(simulator, tmp_path_factory):
    """A gateway per failure mode on a Redis of 8 MB under `noeviction`, each having served
    one request; then the Redis filled until it refuses writes (the last test frees it)."""
    need_redis_tools()
    workdir = tmp_path_factory.mktemp("redis-oom")
    (workdir / "keys.toml").write_text(
        keys_toml(
            key_entry("closed", CLOSED),
            key_entry("local", LOCAL, extra='requests = "3/hour"'),
        )
        + admin_entry("ops", ADMIN)
    )
    redis = start_redis(extra=("--maxmemory", "8mb", "--maxmemory-policy", "noeviction"))
    gateways = {}
    try:
        for mode in ("closed", "local"):
            env = gateway_env(
                simulator,
                str(workdir / "keys.toml"),
                REDIS_URL=redis.url,
                RATE_LIMIT_FAILURE_MODE=mode,
            )
            gateways[mode] = start_gateway(env)
        assert chat(gateways["closed"].url, CLOSED).status_code == 200
        assert chat(gateways["local"].url, LOCAL).status_code == 200
        client = redis_py.Redis(port=redis.port)
        filled = fill(client, 1_000_000)
        # The refused command's own read buffer counted until it was refused, and Redis
        # frees idle clients' buffers later: what is stored may sit just under the limit
        # then. A limit half of it leaves Redis refusing every write, as a full one does.
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used // 2)
        yield {"gateways": gateways, "client": client, "filled": filled}
        client.close()
    finally:
        for gateway in gateways.values():
            gateway.stop()
        redis.stop()


def fill(client: redis_py.Redis, size: int) -> int:
    """SET `size`-byte values filler:0, filler:1... until Redis refuses one; how many it took."""
    index = 0
    with pytest.raises(OutOfMemoryError):
        while index < 100_000:
            client.set(f"filler:{index}", b"x" * size)
            index += 1
    return index


@pytest.fixture(scope="module")
def room(full):
    """The filled Redis given room again, after a while full (the tests that use it run
    last): the gateways probe every second, and the replays it refused meanwhile are kept."""
    time.sleep(2.5)
    full["client"].delete(*(f"filler:{i}" for i in range(full["filled"])))
    return full


def test_closed_mode_answers_503_saying_the_store_is_out_of_memory(full):
    answer = chat(full["gateways"]["closed"].url, CLOSED)
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "rate_limiter_unavailable"
    assert "out of memory" in error["message"]
    assert answer.headers["retry-after"] == "1"


def test_local_mode_serves_on_the_replicas_own_limits(full):
    url = full["gateways"]["local"].url
    answers = [label(chat(url, LOCAL)) for _ in range(4)]
    assert answers == [200, 200, 200, "rate_limit_exceeded"]  # 3/hour, counted in memory
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["limiter"].startswith("local fallback")


def test_no_answer_is_a_5xx_of_another_kind(full):
    statuses = set()
    for mode, secret in (("closed", CLOSED), ("local", LOCAL)):
        for _ in range(5):
            answer = chat(full["gateways"][mode].url, secret)
            statuses.add((answer.status_code, label(answer)))
    assert {s for s in statuses if s[0] >= 500} <= {(503, "rate_limiter_unavailable")}


def test_closed_mode_admits_again_once_redis_has_room(room):
    gateway = room["gateways"]["closed"].url
    assert eventually_ok(lambda: chat(gateway, CLOSED).status_code == 200)


def test_what_local_mode_served_meanwhile_reaches_the_ledger_once_redis_has_room(room):
    today = datetime.now(UTC).date()
    params = {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}

    def served_by_local() -> int:
        rows = httpx.get(
            f"{room['gateways']['local'].url}/admin/v1/usage",
            params={**params, "key": "local"},
            headers=auth(ADMIN),
        ).json()["data"]
        return sum(r["requests"] for r in rows)

    # one before the fill, three on local limits during it: none dropped
    assert eventually_ok(lambda: served_by_local() == 4)


def eventually_ok(check, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False
