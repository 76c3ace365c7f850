"""`python -m bench.attacks`: what one tenant can do to another (SPEC 15), measured.

Two gateway replicas share one redis-server and the simulator. A victim tenant sends small
chat requests at a fixed rate (alternating replicas) for a quiet phase, then again while an
attacker tenant, within its own budgets, names a new model in every request (each one the
upstream refuses) and reads its usage four at a time, and an operator exports the day's
ledger over and over. Then, with `--export-rows`, the ledger is filled with that many rows
(400 days, 100 tenants, two keys each, five models) and one replica exports them all while
the victim goes on: its peak RSS and the export's time are measured. Between the quiet phase
and the attack, the attacker tenant sends as many ordinary requests (one real model, no usage
reads, no exports): what the same load does, so the attack's own effect shows apart from its
load on the two cores. Then, with `--body-mb`, the attacker sends requests of that many MB four
at a time (within the 20 MiB body cap and its budgets): what heavy requests cost the others.
Prints the victim's latency and errors in each phase, what the attacker
got, the slowest command Redis ran (its slowlog) and the export's figures, and writes
attacks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.targets import PeakRss, Proc, start_gateway, start_redis, start_simulator

ROOT = Path(__file__).resolve().parents[1]
VICTIM, ATTACKER, ADMIN = "gk-victim-0123456789", "gk-attacker-0123456789", "gk-ops-0123456789"
MODEL = "grok-4-1-fast-non-reasoning"


def write_keys(workdir: Path) -> Path:
    def digest(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    path = workdir / "keys.toml"
    path.write_text(
        f"""[defaults]
requests = "1000000/minute"
concurrent = 64

[[keys]]
id = "victim"
tenant = "victim"
sha256 = "{digest(VICTIM)}"

[[keys]]
id = "attacker"
tenant = "attacker"
sha256 = "{digest(ATTACKER)}"

[[admin_keys]]
id = "ops"
sha256 = "{digest(ADMIN)}"
"""
    )
    return path


async def victim_load(urls: list[str], seconds: float, rate: float) -> list[tuple[float, int]]:
    """(latency in s, status) of every victim request: `rate` a second for `seconds`, each
    sent on time whatever the others are doing (an open loop, so both phases carry the same
    load)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    results: list[tuple[float, int]] = []

    async def one(i: int, http: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            answer = await http.post(
                f"{urls[i % len(urls)]}/api/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {VICTIM}"},
            )
            status = answer.status_code
        except httpx.HTTPError:
            status = 0
        results.append((time.perf_counter() - started, status))

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        tasks, start = [], time.monotonic()
        for i in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(i, http)))
        await asyncio.gather(*tasks)
    return results


async def attacker(
    urls: list[str],
    stop: asyncio.Event,
    counts: dict[str, dict[int, int]],
    rate: float,
    kind: str = "attack",
    body_mb: float = 10.0,
) -> None:
    """`attack`: unique model names at `rate` a second (each refused upstream), its usage
    read four at a time (as fast as each answer comes), and the admin export over and over;
    `ordinary`: only as many requests for the one real model; `bodies`: four senders of
    `body_mb` MB requests in a loop (within the 20 MiB body cap and the tenant's budgets)."""
    ordinary = kind == "ordinary"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    auth = {"Authorization": f"Bearer {ATTACKER}"}

    def count(what: str, code: int) -> None:
        counts.setdefault(what, {})
        counts[what][code] = counts[what].get(code, 0) + 1

    async def status(answer: Any) -> int:
        async with answer as response:
            await response.read()
            return response.status

    async def names(http: aiohttp.ClientSession, n: int) -> None:
        i = n
        pause = 16 / rate  # sixteen senders share the rate
        while not stop.is_set():
            await asyncio.sleep(pause)
            model = MODEL if ordinary else f"made-up-{i}"
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            url = f"{urls[i % 2]}/api/v1/chat/completions"
            got = await status(http.post(url, json=body, headers=auth))
            count("ordinary requests" if ordinary else "unique model names", got)
            i += 16

    async def usage(http: aiohttp.ClientSession, n: int) -> None:
        while not stop.is_set():
            got = await status(http.get(f"{urls[n % 2]}/api/v1/usage", headers=auth))
            count("usage reads", got)

    async def export(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            got = await status(
                http.get(
                    f"{urls[1]}/admin/v1/usage",
                    params={"from": today, "to": today, "format": "csv"},
                    headers={"Authorization": f"Bearer {ADMIN}"},
                )
            )
            count("admin exports", got)

    async def bodies(http: aiohttp.ClientSession, n: int) -> None:
        text = "x" * int(body_mb * 1_000_000)
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}]})
        headers = {**auth, "Content-Type": "application/json"}
        while not stop.is_set():
            url = f"{urls[n % 2]}/api/v1/chat/completions"
            count("large bodies", await status(http.post(url, data=body, headers=headers)))

    # aiohttp, the lighter client: the attacker's own CPU is on these two cores too.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        if kind == "bodies":
            await asyncio.gather(*(bodies(http, n) for n in range(4)))
            return
        if ordinary:
            await asyncio.gather(*(names(http, n) for n in range(16)))
            return
        await asyncio.gather(
            *(names(http, n) for n in range(16)), *(usage(http, n) for n in range(4)), export(http)
        )


def _attacker_process(
    urls: list[str], rate: float, kind: str, body_mb: float, stop: Any, out: Any
) -> None:
    """`attacker` in a process of its own until `stop` is set; its counts go to `out`."""

    async def main() -> dict[str, dict[int, int]]:
        stopping, counts = asyncio.Event(), {}
        task = asyncio.create_task(attacker(urls, stopping, counts, rate, kind, body_mb))
        await asyncio.to_thread(stop.wait)
        stopping.set()
        await task
        return counts

    out.put(asyncio.run(main()))


class AttackerProcess:
    """The attacker's client in its own process: its requests are not made, parsed and
    timed on the victim's event loop, so the victim's latencies are the gateway's alone."""

    def __init__(
        self, urls: list[str], rate: float, kind: str = "attack", body_mb: float = 10.0
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop, self._out = context.Event(), context.Queue()
        self._process = context.Process(
            target=_attacker_process,
            args=(urls, rate, kind, body_mb, self._stop, self._out),
        )
        self._process.start()

    def stop(self) -> dict[str, dict[int, int]]:
        self._stop.set()
        counts = self._out.get(timeout=60)
        self._process.join(30)
        return counts


def summary(results: list[tuple[float, int]], seconds: float) -> dict:
    ok = sorted(latency for latency, status in results if status == 200)
    errors = sum(1 for _, status in results if status != 200)
    q = statistics.quantiles(ok, n=100) if len(ok) >= 2 else [0.0] * 99
    return {
        "requests": len(results),
        "per_second": round(len(results) / seconds, 1),
        "errors": errors,
        "error_rate": round(errors / max(1, len(results)), 4),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


def slowest_redis_command(redis: Proc) -> tuple[float, str]:
    """The slowest command in Redis's slowlog: its milliseconds and its first words."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    entries = client.slowlog_get(128)
    if not entries:
        return 0.0, ""
    worst = max(entries, key=lambda e: e["duration"])
    command = worst["command"]
    words = (command.decode(errors="replace") if isinstance(command, bytes) else command).split()
    return worst["duration"] / 1000, " ".join(words[:3])[:60]


def fill_ledger(redis: Proc, rows: int) -> tuple[str, str]:
    """`rows` ledger rows (five models a row hash) over 400 days of 100 tenants with two keys
    each, as releases would have written them; the first and last day."""
    import datetime

    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    first = datetime.date(2025, 1, 1)
    fields = {f"{c}|grok-{m}": 7 for c in "rio$" for m in range(5)}
    hashes = rows // 5
    with client.pipeline(transaction=False) as pipe:
        for n in range(hashes):
            day = first + datetime.timedelta(days=n % 400)
            tenant = (n // 400) % 100
            key = f"k{(n // 40000) % 2}-{tenant}"
            pipe.hset(f"gw:{{t:bulk-{tenant}}}:led:{day}:{key}", mapping=fields)
            if n % 2000 == 1999:
                pipe.execute()
        pipe.execute()
    return str(first), str(first + datetime.timedelta(days=399))


async def export_under_load(
    urls: list[str], gateway: Proc, redis: Proc, rows: int, seconds: float, rate: float
) -> dict:
    """One export of `rows` ledger rows from one replica while the victim goes on."""
    first, last = fill_ledger(redis, rows)
    baseline = gateway.rss_mb()
    size = 0

    async def export() -> float:
        nonlocal size
        started = time.perf_counter()
        async with (
            httpx.AsyncClient(timeout=600) as http,
            http.stream(
                "GET",
                f"{gateway.url}/admin/v1/usage",
                params={"from": first, "to": last, "format": "csv"},
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as answer,
        ):
            async for chunk in answer.aiter_raw():
                size += len(chunk)
        return time.perf_counter() - started

    with PeakRss(gateway) as peak:
        took, victim = await asyncio.gather(export(), victim_load(urls, seconds, rate))
    return {
        "rows": rows,
        "export_seconds": round(took, 1),
        "export_mb": round(size / 1e6, 1),
        "rss_before_mb": round(baseline, 1),
        "rss_peak_mb": round(peak.peak, 1),
        "victim": summary(victim, seconds),
    }


async def run(
    seconds: float,
    victim_rate: float,
    mode: str,
    rate: float,
    export_rows: int,
    workdir: Path,
    body_mb: float = 10.0,
) -> dict:
    procs: list[Proc] = []
    try:
        simulator = start_simulator(workdir)
        procs.append(simulator)
        redis = start_redis(workdir)
        procs.append(redis)
        import redis as redis_py

        redis_py.Redis.from_url(redis.url).config_set("slowlog-log-slower-than", 1000)
        keys = write_keys(workdir)
        for n in range(2):
            procs.append(
                start_gateway(
                    workdir,
                    simulator,
                    redis.url,
                    name=f"gateway-{n}",
                    keys_file=keys,
                    RATE_LIMIT_FAILURE_MODE=mode,
                )
            )
        urls = [proc.url for proc in procs[2:]]
        quiet = summary(await victim_load(urls, seconds, victim_rate), seconds)
        load = AttackerProcess(urls, rate, kind="ordinary")
        ordinary = summary(await victim_load(urls, seconds, victim_rate), seconds)
        load.stop()
        attack = AttackerProcess(urls, rate)
        await asyncio.sleep(min(5.0, seconds / 2))  # the ledger would swell first
        under = summary(await victim_load(urls, seconds, victim_rate), seconds)
        counts = attack.stop()
        slowest, slowest_command = slowest_redis_command(redis)
        large = None
        if body_mb:
            flood = AttackerProcess(urls, rate, kind="bodies", body_mb=body_mb)
            await asyncio.sleep(1.0)
            large = summary(await victim_load(urls, seconds, victim_rate), seconds)
            counts.update(flood.stop())
        export = None
        if export_rows:
            export = await export_under_load(
                urls, procs[3], redis, export_rows, seconds, victim_rate
            )
        return {
            "mode": mode,
            "seconds": seconds,
            "victim_rate": victim_rate,
            "attack_rate": rate,
            "quiet": quiet,
            "ordinary_load": ordinary,
            "under_attack": under,
            "large_bodies": large,
            "body_mb": body_mb,
            "attacker": counts,
            "slowest_redis_command_ms": slowest,
            "slowest_redis_command": slowest_command,
            "export": export,
        }
    finally:
        for proc in reversed(procs):
            proc.stop()


def markdown(runs: list[dict]) -> str:
    lines = [
        "| mode | phase | victim req/s | errors | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        for phase in ("quiet", "ordinary_load", "under_attack", "large_bodies"):
            s = r[phase]
            if s is None:
                continue
            name = phase.replace("_", " ")
            if phase == "large_bodies":
                name = f"four {r['body_mb']:g} MB bodies at a time"
            row = [r["mode"], name, s["per_second"], s["errors"]]
            lines.append("| " + " | ".join(map(str, [*row, s["p50_ms"], s["p99_ms"]])) + " |")
    for r in runs:
        e = r["export"]
        if e is not None:
            v = e["victim"]
            lines.append(
                f"| {r['mode']} | export of {e['rows']:,} rows | {v['per_second']} | "
                f"{v['errors']} | {v['p50_ms']} | {v['p99_ms']} |"
            )
    for r in runs:
        e = r["export"]
        if e is not None:
            lines.append(
                f"\n{r['mode']}: the export of {e['rows']:,} rows took {e['export_seconds']} s "
                f"({e['export_mb']} MB of CSV); the replica's RSS went {e['rss_before_mb']} -> "
                f"{e['rss_peak_mb']} MB at its peak."
            )
        got = "; ".join(
            f"{kind}: " + ", ".join(f"{n}x {status}" for status, n in sorted(by.items()))
            for kind, by in sorted(r["attacker"].items())
        )
        lines.append(
            f"\n{r['mode']}: the attacker got {got}; the slowest Redis command ran "
            f"{r['slowest_redis_command_ms']:.1f} ms ({r['slowest_redis_command']})."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--victim-rate", type=float, default=50.0, help="its requests a second")
    parser.add_argument("--export-rows", type=int, default=400_000, help="0: no export run")
    parser.add_argument("--modes", default="local,closed")
    parser.add_argument("--rate", type=float, default=100.0, help="the attacker's names a second")
    parser.add_argument(
        "--body-mb", type=float, default=10.0, help="the large-bodies phase's size (0: none)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="gw-attacks-") as tmp:
        for mode in args.modes.split(","):
            runs.append(
                asyncio.run(
                    run(
                        args.seconds,
                        args.victim_rate,
                        mode,
                        args.rate,
                        args.export_rows,
                        Path(tmp),
                        args.body_mb,
                    )
                )
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attacks.json").write_text(json.dumps(runs, indent=2))
    print(markdown(runs))
    bad = [
        r
        for r in runs
        if r["under_attack"]["errors"]
        or (r["large_bodies"] and r["large_bodies"]["errors"])
        or (r["export"] and r["export"]["victim"]["errors"])
    ]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
