"""`python -m bench [--quick] [--out DIR] [--no-report]`: the gateway against the floor.

Starts, on loopback: the simulator (upstream), the floor (bare pass-through on the same
stack), the gateway in memory mode and in Redis mode (its own redis-server), and measures
them one at a time, side by side in one run, with a separate load-generator process. Prints
a table; writes results.json, bench.png and BENCHMARKS.md (the full run also writes
BENCHMARKS.md at the repository root and bench/bench.png).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.report import print_table, write_markdown, write_plot
from bench.targets import (
    BENCH_KEY,
    PeakRss,
    Proc,
    redis_calls,
    start_floor,
    start_gateway,
    start_upstream_and_redis,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    chunks: int = 20
    delay_ms: float = 0
    duration: float = 5.0
    once: bool = False  # each worker one request (open streams held together)
    stream: bool = True


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("burst", 32, duration=2),
            Scenario("realistic", 100, delay_ms=20, duration=2),
            Scenario("ttft@50", 50, delay_ms=20, duration=2),
            Scenario("idle-streams", 200, chunks=5, delay_ms=300, once=True),
            Scenario("non-streaming", 32, stream=False, duration=2),
            Scenario("curve@8", 8, delay_ms=20, duration=1.5),
        ]
    return [
        Scenario("burst", 32, duration=8),
        Scenario("realistic", 400, delay_ms=20, duration=10),
        Scenario("ttft@50", 50, delay_ms=20, duration=8),
        Scenario("idle-streams", 1000, delay_ms=500, once=True),
        Scenario("non-streaming", 32, stream=False, duration=6),
        Scenario("curve@8", 8, delay_ms=20, duration=5),
        Scenario("curve@32", 32, delay_ms=20, duration=5),
        Scenario("curve@128", 128, delay_ms=20, duration=5),
    ]


def load(url: str, scenario: Scenario, duration: float | None = None) -> dict:
    args = [
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        "--key",
        BENCH_KEY,
        "--concurrency",
        str(scenario.concurrency),
        "--duration",
        str(duration if duration is not None else scenario.duration),
        "--chunks",
        str(scenario.chunks),
        "--delay-ms",
        str(scenario.delay_ms),
    ]
    if scenario.once:
        args.append("--once")
    if not scenario.stream:
        args.append("--no-stream")
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def measure(target: Proc, scenario: Scenario, redis: Proc | None) -> dict:
    """One scenario against one target: load figures plus CPU, RSS and Redis calls."""
    idle_rss = target.rss_mb()
    calls_before = redis_calls(redis)
    cpu_before = target.cpu_seconds()
    with PeakRss(target) as rss:
        result = load(target.url, scenario)
        time.sleep(0.5)  # the last releases and log lines land after the clients finish
    cpu = target.cpu_seconds() - cpu_before
    calls_after = redis_calls(redis)
    completed = max(1, result["completed"])
    result.update(
        target=target.name,
        scenario=scenario.name,
        concurrency=scenario.concurrency,
        cpu_s_per_1000=cpu / completed * 1000,
        idle_rss_mb=idle_rss,
        peak_rss_mb=rss.peak,
    )
    if redis is not None:
        result["redis_scripts_per_request"] = (
            calls_after["scripts"] - calls_before["scripts"]
        ) / completed
        result["redis_commands_per_request"] = (
            calls_after["all"] - calls_before["all"]
        ) / completed
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="a smoke run in under a minute")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-report", action="store_true", help="don't write BENCHMARKS.md")
    parser.add_argument("--no-workers", action="store_true", help="skip the 2-worker runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench" + (" --quick" if args.quick else "")
    workdir = Path(tempfile.mkdtemp(prefix="grok-bench-"))
    started = time.time()
    procs: list[Proc] = []
    results: list[dict] = []
    try:
        simulator, redis = start_upstream_and_redis(workdir, procs)
        plan = scenarios(args.quick)
        targets = [
            ("floor", lambda: start_floor(workdir, simulator), None),
            (
                "gateway-memory",
                lambda: start_gateway(workdir, simulator, None, name="gateway-memory"),
                None,
            ),
            (
                "gateway-redis",
                lambda: start_gateway(workdir, simulator, redis.url, name="gateway-redis"),
                redis,
            ),
        ]
        if not args.quick and not args.no_workers:
            targets.append(
                (
                    "gateway-redis-2w",
                    lambda: start_gateway(
                        workdir, simulator, redis.url, workers=2, name="gateway-redis-2w"
                    ),
                    redis,
                )
            )
        for name, start, store in targets:
            target = start()
            procs.append(target)
            load(target.url, plan[0], duration=1.0)  # warm-up: connections, caches, scripts
            for scenario in plan:
                if name.endswith("-2w") and scenario.name not in ("burst", "realistic"):
                    continue
                result = measure(target, scenario, store)
                results.append(result)
                print(
                    f"{name:>18} {scenario.name:<14} {result['streams_per_s']:8.0f}/s "
                    f"failed={result['failed']}",
                    flush=True,
                )
            target.stop()
            procs.remove(target)
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "command": command,
        "seconds": round(time.time() - started, 1),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print_table(results)
    write_plot(results, args.out / "bench.png")
    markdown = write_markdown(results, meta, image="bench.png")
    (args.out / "BENCHMARKS.md").write_text(markdown)
    if not args.quick and not args.no_report:
        shutil.copy(args.out / "bench.png", ROOT / "bench" / "bench.png")
        (ROOT / "BENCHMARKS.md").write_text(write_markdown(results, meta, image="bench/bench.png"))
    failed = sum(r["failed"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
