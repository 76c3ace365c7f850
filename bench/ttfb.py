"""`python -m bench.ttfb [--concurrency 8,50] [--rounds 6] [--seconds 3]`: TTFB, interleaved.

One `python -m bench` run measures each target once, so a 1 ms difference in TTFB p50 drowns
in the run-to-run spread of a shared 2-core machine. This runs both floors and the gateway
(memory and Redis) side by side, all started once, in interleaved rounds, and prints the
median of the per-round TTFB p50s with every round's figure: the added latency with its spread.

`--niced-redis` adds a gateway on a second redis-server run at nice -10 (needs root or
CAP_SYS_NICE): a diagnostic for how much of the Redis mode's added TTFB is redis-server
waiting for one of the cores the load, the upstream and the gateway are also using.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.__main__ import Scenario, load
from bench.targets import Proc, start_floor, start_gateway, start_redis, start_upstream_and_redis


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ttfb")
    parser.add_argument("--concurrency", default="8,50", help="comma-separated stream counts")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    parser.add_argument(
        "--niced-redis", action="store_true", help="also a gateway on a redis-server at nice -10"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="grok-bench-ttfb-"))
    procs: list[Proc] = []
    try:
        simulator, redis = start_upstream_and_redis(workdir, procs)

        def started(proc: Proc) -> Proc:
            procs.append(proc)
            return proc

        targets = {
            "floor-raw": started(start_floor(workdir, simulator, raw=True)),
            "floor-starlette": started(start_floor(workdir, simulator)),
            "gateway-memory": started(
                start_gateway(workdir, simulator, None, name="gateway-memory")
            ),
            "gateway-redis": started(
                start_gateway(workdir, simulator, redis.url, name="gateway-redis")
            ),
        }
        if args.niced_redis:
            niced = started(start_redis(workdir))
            os.setpriority(os.PRIO_PROCESS, niced.popen.pid, -10)
            targets["gateway-redis-niced"] = started(
                start_gateway(workdir, simulator, niced.url, name="gateway-redis-niced")
            )
        for target in targets.values():
            load(target.url, Scenario("warm-up", 32), duration=1.0)
        failed = 0
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            scenario = Scenario(f"ttfb@{concurrency}", concurrency, delay_ms=20)
            p50s: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    result = load(target.url, scenario, duration=args.seconds)
                    failed += result["failed"]
                    p50s[name].append(result["ttfb_p50_ms"])
            floor = statistics.median(p50s["floor-raw"])
            print(f"TTFB p50 at {concurrency} concurrent streams, {args.rounds} rounds:")
            for name, values in p50s.items():
                median = statistics.median(values)
                rounds = " ".join(f"{v:.1f}" for v in values)
                print(f"  {name:>15} median {median:6.2f} ms ({median - floor:+.2f})  [{rounds}]")
        return 1 if failed else 0
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
