"""`python -m bench.admissions [--concurrency 50] [--waves 200]`: the limiter's Redis client.

Admits and releases waves of concurrent requests (every limit kind on, as in the main
benchmark) against its own redis-server, once through redis-py's scripts and once over the
multiplexed connection, and prints admission latency and client CPU per admit + release.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import uvloop

from bench.targets import BENCH_KEY, start_redis, write_keys
from service.limiter.policy import LimitPolicy
from service.limiter.redis_store import RedisLimiter
from service.redis.connection import connect
from service.redis.multiplexed import MultiplexedConnection
from service.registry.keys import load_registry
from service.usage.record import Charge, Usage

# What each benchmark request is charged: tokens, a cost, a ledger row (as the gateway does).
CHARGE = Charge(
    Usage(input_tokens=8, output_tokens=2, total_tokens=10, cost_ticks=12_000),
    model="grok-4-1-fast-non-reasoning",
    cost_ticks=12_000,
    cost_known=True,
)


def bench_policy(workdir: Path) -> LimitPolicy:
    """The limits of the main benchmark's key, read from the key file it writes."""
    key = load_registry(write_keys(workdir)).lookup(BENCH_KEY)
    assert key is not None
    return key.policy


async def measure(
    url: str, policy: LimitPolicy, client: str, concurrency: int, waves: int
) -> dict[str, float]:
    multiplexed = MultiplexedConnection.from_url(url) if client == "multiplexed" else None
    limiter = RedisLimiter(connect(url), multiplexed=multiplexed)
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        decision = await limiter.admit(policy)
        latencies.append(time.perf_counter() - started)
        await limiter.release(policy, decision, CHARGE)

    async def wave() -> None:
        await asyncio.gather(*(one() for _ in range(concurrency)))

    for _ in range(max(5, waves // 10)):  # warm-up: connections, scripts loaded
        await wave()
    latencies.clear()
    cpu = time.process_time()
    for _ in range(waves):
        await wave()
    cpu = time.process_time() - cpu
    await limiter.aclose()
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "cpu_us_per_pair": cpu / (concurrency * waves) * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admissions")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--waves", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two clients")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="grok-bench-admissions-"))
    redis = start_redis(workdir)
    policy = bench_policy(workdir)
    try:
        print(f"{args.concurrency} concurrent admit + release, {args.waves} waves:")
        for _ in range(args.rounds):
            for client in ("redis-py", "multiplexed"):
                figures = uvloop.run(
                    measure(redis.url, policy, client, args.concurrency, args.waves)
                )
                print(
                    f"  {client:>11}: admission p50 {figures['p50_ms']:.2f} ms, "
                    f"p99 {figures['p99_ms']:.2f} ms, "
                    f"client CPU {figures['cpu_us_per_pair']:.0f} us per admit + release"
                )
        return 0
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
