"""`python -m bench.instructions`: instructions per relayed stream, counted by callgrind.

CPU seconds on this shared machine move by 10% and more between runs; instruction counts
barely move (the same code under the same load gives the same figure within ~2-4%), so a
change of a few percent shows. Each target runs under valgrind's callgrind: after a warm-up,
its counters are zeroed, exactly `--streams` burst streams (32 concurrent, 20 chunks, no
spacing) are relayed, and the counters are dumped. The count is everything the target's
process executes in user space (Python, uvloop, the parsers), not the kernel's work for its
system calls. Under valgrind a target runs ~50 times slower, so the upstream's chunks come to
it in fewer reads than at full speed: compare targets and versions, not with CPU seconds.

Usage: python -m bench.instructions [--streams 1000] [--warm-up 300] [--api chat|responses]
       [--targets floor-raw,floor-starlette,gateway-memory,gateway-redis]
       [--stream-usage openai|passthrough]  (the gateways' GATEWAY_STREAM_USAGE)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.__main__ import Scenario, load
from bench.targets import Proc, start_floor, start_gateway, start_upstream_and_redis

TARGETS = ("floor-raw", "floor-starlette", "gateway-memory", "gateway-redis")


def counted(
    target: Proc, out_file: Path, streams: int, api: str, warm_up: int
) -> tuple[float, int]:
    """(instructions per stream, failed streams) of `streams` burst streams through `target`,
    after `warm_up` streams not counted (connections, caches, the limiter's scripts)."""
    burst = Scenario("burst", 32, api=api)
    load(target.url, burst, requests=warm_up)
    pid = str(target.popen.pid)  # valgrind runs the program in its own process
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
    result = load(target.url, burst, requests=streams)
    before = set(out_file.parent.glob(out_file.name + ".*"))
    subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in set(out_file.parent.glob(out_file.name + ".*")) - before:
            total = _summary(dump)
            if total is not None:
                return total / max(1, result["completed"]), result["failed"]
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump for {target.name}")


def _start(
    name: str, workdir: Path, simulator: Proc, redis: Proc, wrap: list[str], stream_usage: str
) -> Proc:
    if name == "floor-raw":
        return start_floor(workdir, simulator, raw=True, wrap=wrap)
    if name == "floor-starlette":
        return start_floor(workdir, simulator, wrap=wrap)
    store = redis.url if name == "gateway-redis" else None
    return start_gateway(
        workdir, simulator, store, name=name, wrap=wrap, GATEWAY_STREAM_USAGE=stream_usage
    )


def _summary(dump: Path) -> int | None:
    """The dump's instruction count (its `summary:` line), or None while it is being written."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--warm-up", type=int, default=300, help="streams before counting")
    parser.add_argument("--api", choices=("chat", "responses"), default="chat")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--stream-usage", choices=("openai", "passthrough"), default="openai")
    args = parser.parse_args()
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind (with callgrind_control) is not installed", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="grok-instructions-"))
    procs: list[Proc] = []
    counts: dict[str, float] = {}
    failed = 0
    try:
        simulator, redis = start_upstream_and_redis(workdir, procs)
        for name in names:
            out_file = workdir / f"{name}.callgrind"
            wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
            target = _start(name, workdir, simulator, redis, wrap, args.stream_usage)
            procs.append(target)
            counts[name], lost = counted(target, out_file, args.streams, args.api, args.warm_up)
            failed += lost
            target.stop()
            procs.remove(target)
            base = counts.get("floor-raw")
            ratio = f"{counts[name] / base:5.2f}x the raw floor" if base else ""
            print(f"{name:>16}  {counts[name] / 1e6:6.3f} M instructions per stream  {ratio}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        print(f"{failed} streams failed or were truncated", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
