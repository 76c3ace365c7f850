"""`python -m bench.admissions [--topology single|sentinel|cluster] [--concurrency 50]
[--waves 200] [--tenants 12]`: the limiter's Redis client, on one Redis, a Sentinel set or a
Cluster.

Admits and releases waves of concurrent requests (every limit kind on, as in the main
benchmark; each request of one of `--tenants` tenants, so that a Cluster's masters share
them) against its own redis-server processes, once through redis-py's scripts and once over
the multiplexed connection, and prints admissions a second, admission latency and client
CPU per admit + release. The topologies are the test suite's (`tests/support/topologies.py`):
local processes, a Sentinel set of a master, a replica and three sentinels, a Cluster of
three masters with a replica each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import uvloop

from bench.targets import BENCH_KEY, write_keys
from service.limiter.policy import LimitPolicy
from service.limiter.redis_store import RedisLimiter
from service.redis.connection import connect, connect_shared
from service.registry.keys import load_registry
from service.usage.record import Charge, Usage
from tests.support.topologies import persistent_redis, redis_cluster, sentinel_set

TOPOLOGIES = ("single", "sentinel", "cluster")

# What each benchmark request is charged: tokens, a cost, a ledger row (as the gateway does).
CHARGE = Charge(
    Usage(input_tokens=8, output_tokens=2, total_tokens=10, cost_ticks=12_000),
    model="grok-4-1-fast-non-reasoning",
    cost_ticks=12_000,
    cost_known=True,
)


def bench_policies(workdir: Path, tenants: int) -> list[LimitPolicy]:
    """The limits of the main benchmark's key, read from the key file it writes, for
    `tenants` keys of a tenant each."""
    key = load_registry(write_keys(workdir)).lookup(BENCH_KEY)
    assert key is not None
    return [
        dataclasses.replace(key.policy, key_id=f"bench-{i}", tenant=f"bench-{i}")
        for i in range(tenants)
    ]


@contextlib.contextmanager
def topology(name: str, workdir: Path) -> Iterator[str]:
    """The REDIS_URL of a running topology (its processes stopped on exit)."""
    if name == "single":
        with persistent_redis(workdir / "single") as redis:
            yield redis.url
    elif name == "sentinel":
        with sentinel_set(workdir / "sentinel") as group:
            group.wait_ready()
            yield group.url
    else:
        with redis_cluster(workdir / "cluster") as group:
            yield group.url


async def measure(
    url: str, policies: list[LimitPolicy], client: str, concurrency: int, waves: int
) -> dict[str, float]:
    multiplexed = connect_shared(url) if client == "multiplexed" else None
    limiter = RedisLimiter(connect(url), multiplexed=multiplexed)
    latencies: list[float] = []

    async def one(policy: LimitPolicy) -> None:
        started = time.perf_counter()
        decision = await limiter.admit(policy)
        latencies.append(time.perf_counter() - started)
        await limiter.release(policy, decision, CHARGE)

    async def wave() -> None:
        await asyncio.gather(*(one(policies[i % len(policies)]) for i in range(concurrency)))

    for _ in range(max(5, waves // 10)):  # warm-up: connections, scripts loaded
        await wave()
    latencies.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(waves):
        await wave()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await limiter.aclose()
    latencies.sort()
    return {
        "admissions_per_s": concurrency * waves / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "cpu_us_per_pair": cpu / (concurrency * waves) * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admissions")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="single")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--waves", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=12, help="keys, of a tenant each")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two clients")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="grok-bench-admissions-"))
    policies = bench_policies(workdir, args.tenants)
    try:
        with topology(args.topology, workdir) as url:
            print(
                f"{args.topology}: {args.concurrency} concurrent admit + release of "
                f"{args.tenants} tenants, {args.waves} waves:"
            )
            for _ in range(args.rounds):
                for client in ("redis-py", "multiplexed"):
                    figures = uvloop.run(
                        measure(url, policies, client, args.concurrency, args.waves)
                    )
                    print(
                        f"  {client:>11}: {figures['admissions_per_s']:.0f} admissions/s, "
                        f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, "
                        f"client CPU {figures['cpu_us_per_pair']:.0f} us per admit + release"
                    )
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
