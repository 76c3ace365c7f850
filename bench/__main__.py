"""`python -m bench [--quick] [--out DIR] [--no-report]`: the gateway against the floor.

Starts, on loopback: the simulator (upstream), the floor (bare pass-through on the same
stack), the gateway in memory mode and in Redis mode (its own redis-server), and measures
them one at a time, side by side in one run, with a separate load-generator process. Prints
a table and the guard (`bench/guard.py`); writes results.json, bench.png and BENCHMARKS.md
(the full run also writes BENCHMARKS.md at the repository root and bench/bench.png). Exits
non-zero when a stream failed or, in a full run, when a guarded target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import guard
from bench.report import print_guard, print_table, write_markdown, write_plot
from bench.streams import PATHS, request_body
from bench.targets import (
    BENCH_KEY,
    PeakRss,
    Proc,
    redis_calls,
    simulator_has_openai_shapes,
    start_floor,
    start_gateway,
    start_simulator,
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
    api: str = "chat"  # or "responses"
    include_usage: bool = False  # chat: ask for the usage-only chunk before [DONE]


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("burst", 32, duration=1),
            Scenario("realistic", 100, delay_ms=20, duration=1.5, include_usage=True),
            Scenario("ttft@50", 50, delay_ms=20, duration=1),
            Scenario("idle-streams", 200, chunks=5, delay_ms=200, once=True),
            Scenario("non-streaming", 32, stream=False, duration=1),
            Scenario("responses-burst", 32, duration=1, api="responses"),
            Scenario("curve@8", 8, delay_ms=20, duration=1),
        ]
    return [
        Scenario("burst", 32, duration=8),
        Scenario("realistic", 400, delay_ms=20, duration=10, include_usage=True),
        Scenario("ttft@50", 50, delay_ms=20, duration=8),
        Scenario("idle-streams", 1000, delay_ms=500, once=True),
        Scenario("non-streaming", 32, stream=False, duration=6),
        Scenario("responses-burst", 32, duration=8, api="responses"),
        Scenario("responses-realistic", 400, delay_ms=20, duration=10, api="responses"),
        Scenario("curve@8", 8, delay_ms=20, duration=5),
        Scenario("curve@32", 32, delay_ms=20, duration=5),
        Scenario("curve@128", 128, delay_ms=20, duration=5),
    ]


def shape_scenarios(quick: bool) -> tuple[list[Scenario], int]:
    """The xAI-vs-OpenAI stream-shape comparison: scenarios and interleaved rounds."""
    if quick:
        return [Scenario("shapes:burst", 32, duration=1)], 1
    return [
        Scenario("shapes:burst", 32, duration=4),
        Scenario("shapes:spaced", 128, delay_ms=20, duration=4),
    ], 6


def load(
    url: str, scenario: Scenario, duration: float | None = None, requests: int | None = None
) -> dict:
    """Run the load generator on `url`: for the scenario's duration (or `duration`), or for
    exactly `requests` requests in all."""
    args = [
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        "--key",
        BENCH_KEY,
        "--api",
        scenario.api,
        "--concurrency",
        str(scenario.concurrency),
        "--duration",
        str(duration if duration is not None else scenario.duration),
        "--chunks",
        str(scenario.chunks),
        "--delay-ms",
        str(scenario.delay_ms),
    ]
    if requests is not None:
        args += ["--requests", str(requests)]
    if scenario.once:
        args.append("--once")
    if not scenario.stream:
        args.append("--no-stream")
    if scenario.include_usage:
        args.append("--include-usage")
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def serves(target: Proc, api: str) -> bool:
    """Whether the target (and its upstream) serve `api`: one small request, any answer but 404."""
    path = PATHS[api]
    body = request_body(api, chunks=2)
    headers = {"authorization": f"Bearer {BENCH_KEY}", "content-type": "application/json"}
    try:
        response = httpx.post(target.url + path, content=body, headers=headers, timeout=10)
    except httpx.HTTPError:
        return False
    return response.status_code not in (404, 405)


def measure(target: Proc, scenario: Scenario, redis: Proc | None, shape: str) -> dict:
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
        api=scenario.api,
        shape=shape,
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


def _progress(result: dict) -> None:
    print(
        f"{result['target']:>18} {result['shape']:<6} {result['scenario']:<20} "
        f"{result['streams_per_s']:8.0f}/s  CPU {result['cpu_s_per_1000']:.2f} s/1k  "
        f"failed={result['failed']} {result['failures'] or ''}",
        flush=True,
    )


def run_targets(
    targets: list[tuple[str, Callable[[], Proc], Proc | None, set[str] | None]],
    plan: list[Scenario],
    shape: str,
    procs: list[Proc],
    skipped: list[str],
) -> list[dict]:
    """Each target started, measured on its scenarios (all, or `only`), stopped, one by one."""
    results = []
    for name, start, store, only in targets:
        target = start()
        procs.append(target)
        load(target.url, plan[0], duration=1.0)  # warm-up: connections, caches, scripts
        apis = {api: serves(target, api) for api in {s.api for s in plan}}
        for scenario in plan:
            if only is not None and scenario.name not in only:
                continue
            if not apis[scenario.api]:
                skipped.append(f"{name} {scenario.name}: {PATHS[scenario.api]} not served")
                print(f"{name:>18} {scenario.name:<20} skipped: {scenario.api} not served")
                continue
            results.append(measure(target, scenario, store, shape))
            _progress(results[-1])
        target.stop()
        procs.remove(target)
    return results


def interleaved(
    targets: list[tuple[str, Proc, Proc | None]], plan: list[Scenario], rounds: int
) -> list[dict]:
    """Targets already running, measured in interleaved rounds (each scenario: every target
    once per round, in turn, the order reversed every other round), so the machine's drift
    hits them alike. One row per target and scenario with the medians, and each round's
    streams/s and CPU."""
    for _, target, _ in targets:
        load(target.url, plan[0], duration=1.0)  # warm-up
    rows = []
    for scenario in plan:
        runs: dict[str, list[dict]] = {target.name: [] for _, target, _ in targets}
        for round_ in range(rounds):
            for shape, target, store in targets if round_ % 2 == 0 else targets[::-1]:
                runs[target.name].append(measure(target, scenario, store, shape))
        for name, measured in runs.items():
            row = dict(measured[0])
            row["target"] = name.rsplit("-", 1)[0] if name.endswith(("-xai", "-openai")) else name
            for field in (
                "streams_per_s",
                "cpu_s_per_1000",
                "ttfb_p50_ms",
                "ttfb_p99_ms",
                "total_p50_ms",
                "total_p99_ms",
                "peak_rss_mb",
            ):
                row[field] = statistics.median(r[field] for r in measured)
            row["completed"] = sum(r["completed"] for r in measured)
            row["failed"] = sum(r["failed"] for r in measured)
            row["failures"] = {k: v for r in measured for k, v in r["failures"].items()}
            row["rounds"] = len(measured)
            row["streams_rounds"] = [round(r["streams_per_s"], 1) for r in measured]
            row["cpu_rounds"] = [round(r["cpu_s_per_1000"], 3) for r in measured]
            rows.append(row)
            _progress(row)
    return rows


def compare_shapes(
    workdir: Path, simulators: dict[str, Proc], redis: Proc, quick: bool, procs: list[Proc]
) -> list[dict]:
    """The raw floor and the gateway (Redis) on xAI- and OpenAI-shaped streams, all four
    started at once and measured in interleaved rounds."""
    plan, rounds = shape_scenarios(quick)
    targets: list[tuple[str, Proc, Proc | None]] = []
    for shape, simulator in simulators.items():
        floor = start_floor(workdir, simulator, raw=True, name=f"floor-raw-{shape}")
        procs.append(floor)
        gateway = start_gateway(workdir, simulator, redis.url, name=f"gateway-redis-{shape}")
        procs.append(gateway)
        targets += [(shape, floor, None), (shape, gateway, redis)]
    rows = interleaved(targets, plan, rounds)
    for _, target, _ in targets:
        target.stop()
        procs.remove(target)
    return rows


def paired(
    workdir: Path, simulator: Proc, redis: Proc, shape: str, procs: list[Proc]
) -> list[dict]:
    """The throughput targets again, the raw floor and the gateway (Redis) both running and
    measured in alternation, 8 rounds (4 each way round): ratios that one run's drift, or
    one slow minute of a shared machine, cannot tilt."""
    floor = start_floor(workdir, simulator, raw=True)
    procs.append(floor)
    gateway = start_gateway(workdir, simulator, redis.url, name="gateway-redis")
    procs.append(gateway)
    plan = [
        Scenario("paired:burst", 32, duration=4),
        Scenario("paired:realistic", 400, delay_ms=20, duration=4, include_usage=True),
    ]
    if serves(gateway, "responses"):
        plan += [
            Scenario("paired:responses-burst", 32, duration=4, api="responses"),
            Scenario("paired:responses-realistic", 400, delay_ms=20, duration=4, api="responses"),
        ]
    rows = interleaved([(shape, floor, None), (shape, gateway, redis)], plan, rounds=8)
    for target in (floor, gateway):
        target.stop()
        procs.remove(target)
    return rows


def keep_soak_section(markdown: str) -> str:
    """BENCHMARKS.md's "Faults and soak" section (written by bench.soak), carried over."""
    path = ROOT / "BENCHMARKS.md"
    old = path.read_text() if path.exists() else ""
    marker = old.find("\n## Faults and soak")
    return markdown if marker < 0 else markdown.rstrip("\n") + "\n" + old[marker:]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: the guard shown, not enforced"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-report", action="store_true", help="don't write BENCHMARKS.md")
    parser.add_argument("--no-workers", action="store_true", help="skip the 2-worker runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench" + (" --quick" if args.quick else "")
    workdir = Path(tempfile.mkdtemp(prefix="grok-bench-"))
    started = time.time()
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    procs: list[Proc] = []
    results: list[dict] = []
    skipped: list[str] = []
    # A simulator that knows --openai-shapes speaks xAI's shape by default.
    xai_default = simulator_has_openai_shapes()
    shape = "xai" if xai_default else "openai"
    try:
        simulator, redis = start_upstream_and_redis(workdir, procs)
        # The Starlette floor is for reference: in the quick run, the burst alone.
        targets: list[tuple[str, Callable[[], Proc], Proc | None, set[str] | None]] = [
            ("floor-raw", lambda: start_floor(workdir, simulator, raw=True), None, None),
            (
                "floor-starlette",
                lambda: start_floor(workdir, simulator),
                None,
                {"burst"} if args.quick else None,
            ),
            (
                "gateway-memory",
                lambda: start_gateway(workdir, simulator, None, name="gateway-memory"),
                None,
                None,
            ),
            (
                "gateway-redis",
                lambda: start_gateway(workdir, simulator, redis.url, name="gateway-redis"),
                redis,
                None,
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
                    {"burst", "realistic"},
                )
            )
        results += run_targets(targets, scenarios(args.quick), shape, procs, skipped)
        if not args.quick:
            results += paired(workdir, simulator, redis, shape, procs)
        if xai_default:
            openai = start_simulator(workdir, openai_shapes=True)
            procs.append(openai)
            simulators = {"xai": simulator, "openai": openai}
            results += compare_shapes(workdir, simulators, redis, args.quick, procs)
        else:
            skipped.append("shapes: the simulator has no --openai-shapes (xAI shapes not landed)")
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "command": command,
        "seconds": round(time.time() - started, 1),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "default_shape": shape,
        "load": load_before,
        "skipped": skipped,
    }
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print_table(results)
    for line in skipped:
        print("skipped:", line)
    enforced = not args.quick
    verdicts = guard.checks(results)
    print_guard(verdicts, enforced)
    write_plot(results, args.out / "bench.png")
    markdown = write_markdown(results, verdicts, meta, image="bench.png", enforced=enforced)
    (args.out / "BENCHMARKS.md").write_text(markdown)
    if enforced and not args.no_report:
        shutil.copy(args.out / "bench.png", ROOT / "bench" / "bench.png")
        markdown = write_markdown(results, verdicts, meta, image="bench/bench.png", enforced=True)
        (ROOT / "BENCHMARKS.md").write_text(keep_soak_section(markdown))
    failed = sum(r["failed"] for r in results)
    missed = guard.failed(verdicts) if enforced else []
    for check in missed:
        print(f"guard {check.verdict}: {check.target}", file=sys.stderr)
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
