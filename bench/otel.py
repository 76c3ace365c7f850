"""`python -m bench.otel [--quick] [--rounds N]`: what OpenTelemetry costs per stream.

Two gateways on one simulator, one without an OTLP endpoint (telemetry off) and one exporting
traces and metrics to an OTLP/HTTP sink in this process (it answers every export with an
empty success; nothing is decoded). The load generator (`bench.loadgen`, its own process)
runs the same streaming scenarios against each in turn, interleaved over several rounds, and
the gateway's CPU seconds per 1000 streams are compared (median of the rounds). Prints a
table and writes otel.json; exits non-zero when a stream failed, or (full run) when the cost
is above the target of 10% more CPU per stream.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.__main__ import Scenario, load, measure
from bench.targets import Proc, start_gateway, start_simulator, write_keys

TARGET_RATIO = 1.10  # at most 10% more CPU per stream with telemetry on


class _Sink(BaseHTTPRequestHandler):
    exports = 0
    bytes = 0

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length") or 0)
        self.rfile.read(size)
        _Sink.exports += 1
        _Sink.bytes += size
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [Scenario("burst", 16, duration=1)]
    return [
        Scenario("burst", 32, duration=6),
        Scenario("spaced", 128, delay_ms=20, duration=6),
        Scenario("non-streaming", 32, stream=False, duration=6),
    ]


def _only(signal: str | None) -> dict[str, str]:
    if signal == "traces":
        return {"OTEL_METRICS_EXPORTER": "none"}
    if signal == "metrics":
        return {"OTEL_TRACES_EXPORTER": "none"}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otel", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (5)")
    parser.add_argument("--out", type=Path, default=None, help="where otel.json goes")
    parser.add_argument(
        "--only",
        choices=("traces", "metrics"),
        default=None,
        help="export one signal (the other's OTEL_<SIGNAL>_EXPORTER=none)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another OTEL_* variable for the gateway with telemetry on (e.g. a sampler)",
    )
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    rounds = args.rounds or (1 if args.quick else 5)
    workdir = Path(tempfile.mkdtemp(prefix="bench-otel-"))
    out = args.out or workdir
    out.mkdir(parents=True, exist_ok=True)

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    procs: list[Proc] = []
    results: list[dict] = []
    try:
        simulator = start_simulator(workdir)
        procs.append(simulator)
        keys = write_keys(workdir)
        off = start_gateway(workdir, simulator, None, name="otel-off", keys_file=keys)
        procs.append(off)
        on = start_gateway(
            workdir,
            simulator,
            None,
            name="otel-on",
            keys_file=keys,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            **_only(args.only),
            **extra,
        )
        procs.append(on)
        plan = scenarios(args.quick)
        for target in (off, on):
            load(target.url, plan[0], duration=1.0)  # warm-up: connections, imports, caches
        for scenario in plan:
            for round_ in range(rounds):
                # Alternate which goes first, so drift on a shared machine hits both alike.
                pair = (off, on) if round_ % 2 == 0 else (on, off)
                for target in pair:
                    result = measure(target, scenario, None, "xai")
                    result["round"] = round_
                    results.append(result)
                    print(
                        f"{target.name:>9} {scenario.name:<14} round {round_}: "
                        f"{result['streams_per_s']:7.0f}/s  "
                        f"CPU {result['cpu_s_per_1000']:.3f} s/1k  failed={result['failed']}",
                        flush=True,
                    )
    finally:
        for proc in reversed(procs):
            proc.stop()
        sink.shutdown()

    summary = []
    for scenario in plan:
        cpu = {
            name: statistics.median(
                r["cpu_s_per_1000"]
                for r in results
                if r["target"] == name and r["scenario"] == scenario.name
            )
            for name in ("otel-off", "otel-on")
        }
        summary.append(
            {
                "scenario": scenario.name,
                "concurrency": scenario.concurrency,
                "stream": scenario.stream,
                "cpu_s_per_1000_off": round(cpu["otel-off"], 3),
                "cpu_s_per_1000_on": round(cpu["otel-on"], 3),
                "ratio": round(cpu["otel-on"] / cpu["otel-off"], 3),
            }
        )
    failed = sum(r["failed"] for r in results)
    print(f"\n{'scenario':<14} {'off s/1k':>9} {'on s/1k':>9} {'on/off':>7}")
    for row in summary:
        print(
            f"{row['scenario']:<14} {row['cpu_s_per_1000_off']:9.3f} "
            f"{row['cpu_s_per_1000_on']:9.3f} {row['ratio']:7.3f}"
        )
    print(f"exports received: {_Sink.exports} ({_Sink.bytes} bytes); failed streams: {failed}")
    (out / "otel.json").write_text(
        json.dumps(
            {"rounds": rounds, "env": extra, "summary": summary, "results": results}, indent=2
        )
    )
    print(f"wrote {out / 'otel.json'}")
    if failed or _Sink.exports == 0:
        return 1
    over = [row for row in summary if row["stream"] and row["ratio"] > TARGET_RATIO]
    if over and not args.quick:
        print(f"over the target ({TARGET_RATIO:.2f}x): {[row['scenario'] for row in over]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
