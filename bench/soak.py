"""`python -m bench.soak [--minutes N] [--modes local,closed] [--label TEXT]`: faults and soak.

N minutes of mixed traffic (chat streams, non-streaming chat, images, Responses streams when
the gateway serves them) from a handful of keys in two tenants, each with a concurrency cap,
against two gateway replicas sharing one real redis-server, while Redis is killed (SIGKILL,
restarted on the same port), hung (SIGSTOP ... SIGCONT) and restarted (SIGTERM, started
again) in turn. Per `RATE_LIMIT_FAILURE_MODE` it reports:

- every request's outcome: ok; refused with a documented status (429 with a limit code, 503
  `rate_limiter_unavailable`); failed (any other status, or no answer); broken (a 200 whose
  stream or body is incomplete);
- stray slots: live concurrency leases in Redis when no request is in flight, right after the
  traffic and again a lease later (both replicas still running): must be 0;
- charges against admissions: each key's and tenant's request counter in Redis (day window)
  against the 200 answers its clients got. In `closed` mode they must be equal; in `local`
  mode requests admitted on a replica's memory during an outage are not in Redis, so the
  counter may be lower, never higher;
- each replica's RSS and open file descriptors, sampled every 2 s, with a least-squares slope
  over the run after its first 30 s (MB/min, fds/min).

Prints a table, writes soak.json and (unless --no-report) BENCHMARKS.md's "Faults and soak"
section: this run alone, titled by --label (earlier runs stay in git's history). Loopback
only; every loop is bounded in time and count; every process started is stopped (process
groups), on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp
import redis as redis_py
import uvloop

from bench.faults import KINDS, FaultyRedis
from bench.streams import PATHS, check, request_body
from bench.targets import Proc, start_gateway, start_simulator

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400
SAMPLE_SECONDS = 2.0
FIT_AFTER_SECONDS = 30.0
MAX_REQUESTS = 200_000
REFUSALS = {
    (429, "rate_limit_exceeded"),
    (429, "tokens_limit_exceeded"),
    (429, "concurrency_limit_exceeded"),
    (429, "spend_limit_exceeded"),
    (503, "rate_limiter_unavailable"),
    (503, "server_shutting_down"),
}

# id, tenant, concurrency cap: more clients per key than its cap, so caps are reached.
KEYS = (
    ("acme-a", "acme", 3),
    ("acme-b", "acme", 4),
    ("globex-a", "globex", 3),
    ("globex-b", "globex", 5),
    ("solo", None, 2),
)


TICKS_PER_USD = 10_000_000_000


def secret(key_id: str) -> str:
    return f"gk-soak-{key_id}-0123456789abcdef"


def write_keys(workdir: Path) -> Path:
    lines = [
        "[defaults]",
        'requests = "100000/minute;1000000/day"',
        'tokens = "10000000000/day"',
        "",
    ]
    for tenant in sorted({t for _, t, _ in KEYS if t}):
        lines += [f"[tenants.{tenant}]", 'requests = "1000000/day"', ""]
    for key_id, tenant, cap in KEYS:
        digest = hashlib.sha256(secret(key_id).encode()).hexdigest()
        lines += ["[[keys]]", f'id = "{key_id}"', f'sha256 = "{digest}"', f"concurrent = {cap}"]
        if tenant:
            lines.append(f'tenant = "{tenant}"')
        lines.append("")
    path = workdir / "soak-keys.toml"
    path.write_text("\n".join(lines))
    return path


@dataclass
class Outcome:
    n: int
    key: str
    replica: int
    kind: str
    started: float
    ended: float = 0.0
    status: int = 0
    code: str | None = None
    result: str = "failed"  # ok, refused, failed, broken
    reason: str = ""
    cost_ticks: int = 0  # the last `cost_in_usd_ticks` of a 200 answer: what the client saw


@dataclass
class Soak:
    mode: str
    seconds: float
    lease_seconds: float
    fault_every: float
    clients: int
    rng: random.Random
    workdir: Path
    replicas: list[Proc] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    kinds: tuple[str, ...] = ("chat-stream", "chat", "images")
    t0: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- traffic ---------------------------------------------------------------------------

    async def one(self, session: aiohttp.ClientSession, n: int, key: str, kind: str) -> Outcome:
        replica = self.rng.randrange(len(self.replicas))
        outcome = Outcome(n, key, replica, kind, self.now())
        api = "chat" if kind.startswith("chat") else kind.split("-")[0]
        stream = kind.endswith("-stream")
        include_usage = stream and api == "chat" and self.rng.random() < 0.5
        chunks = 20
        body = request_body(
            api, stream, chunks, self.rng.uniform(5, 40), include_usage=include_usage
        )
        headers = {
            "authorization": f"Bearer {secret(key)}",
            "content-type": "application/json",
            "x-request-id": f"soak-{self.mode}-{n}",
        }
        url = self.replicas[replica].url + PATHS[api]
        try:
            async with session.post(url, data=body, headers=headers) as response:
                outcome.status = response.status
                try:
                    raw = await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    if response.status == 200:
                        outcome.result, outcome.reason = "broken", type(exc).__name__
                        return outcome
                    raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome.reason = type(exc).__name__
            return outcome
        finally:
            outcome.ended = self.now()
        if outcome.status == 200:
            costs = _COST.findall(raw[-4096:]) or _COST.findall(raw)
            outcome.cost_ticks = int(costs[-1]) if costs else 0
            problem = check(api, stream, raw, chunks, include_usage)
            outcome.result, outcome.reason = ("ok", "") if problem is None else ("broken", problem)
            return outcome
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            outcome.code = json.loads(raw)["error"]["code"]
        documented = (outcome.status, outcome.code) in REFUSALS
        outcome.result = "refused" if documented else "failed"
        outcome.reason = f"{outcome.status} {outcome.code}"
        return outcome

    async def traffic(self, deadline: float) -> None:
        counter = iter(range(MAX_REQUESTS))
        timeout = aiohttp.ClientTimeout(total=30, sock_connect=5)
        connector = aiohttp.TCPConnector(limit=0)

        async def client(index: int, session: aiohttp.ClientSession) -> None:
            key = KEYS[index % len(KEYS)][0]
            while self.now() < deadline:
                n = next(counter, None)
                if n is None:
                    return
                kind = self.rng.choice(self.kinds)
                outcome = await self.one(session, n, key, kind)
                self.outcomes.append(outcome)
                # Like an SDK: a refused or failed request is retried after a pause.
                pause = 0.05 if outcome.result == "ok" else self.rng.uniform(0.5, 1.0)
                await asyncio.sleep(self.rng.uniform(0, pause))

        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(client(i, session) for i in range(self.clients)))

    # -- faults and samples ----------------------------------------------------------------

    async def faults(self, redis: FaultyRedis, last: float) -> None:
        """One fault every `fault_every` seconds, kinds in turn, the last before `last`."""
        index = 0
        while True:
            at = self.fault_every * (index + 1)
            if at > last:
                return
            await asyncio.sleep(max(0.0, at - self.now()))
            fault = await asyncio.to_thread(redis.inject, KINDS[index % len(KINDS)])
            print(f"  {fault.started:6.1f}s  {fault.kind:<8} {fault.detail}", flush=True)
            index += 1

    async def sample(self, deadline: float) -> None:
        async with aiohttp.ClientSession() as session:
            while self.now() < deadline:
                row: dict = {"t": round(self.now(), 1)}
                for i, replica in enumerate(self.replicas):
                    row[f"rss_mb_{i}"] = round(replica.rss_mb(), 2)
                    row[f"fds_{i}"] = replica.open_fds()
                    try:
                        async with session.get(
                            replica.url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)
                        ) as response:
                            row[f"limiter_{i}"] = (await response.json()).get("limiter", "?")
                    except (aiohttp.ClientError, TimeoutError, ValueError):
                        row[f"limiter_{i}"] = "no answer"
                self.samples.append(row)
                await asyncio.sleep(SAMPLE_SECONDS)


# -- what Redis holds afterwards -----------------------------------------------------------

_COST = re.compile(rb'"cost_in_usd_ticks"\s*:\s*(\d+)')
_COUNTER = re.compile(r":req:(k|t):([^:]+):86400:(\d+)$")


def redis_now_ms(client: redis_py.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def stray_slots(client: redis_py.Redis) -> dict[str, int]:
    """Live (unexpired) concurrency leases per concurrency set."""
    now = redis_now_ms(client)
    found = {}
    for name in client.scan_iter(match="*:conc:*", count=1000):
        live = client.zcount(name, f"({now}", "+inf")
        if live:
            found[name.decode()] = live
    return found


def request_counters(client: redis_py.Redis) -> dict[str, int]:
    """Each key's (`k:ID`) and tenant's (`t:NAME`) day-window request counters, summed."""
    totals: Counter[str] = Counter()
    for name in client.scan_iter(match="*:req:*:86400:*", count=1000):
        match = _COUNTER.search(name.decode())
        if match:
            totals[f"{match[1]}:{match[2]}"] += int(client.get(name) or 0)
    return dict(totals)


_LEDGER = re.compile(r":led:\d{4}-\d{2}-\d{2}:([^:]+)$")


def ledger(client: redis_py.Redis) -> dict[str, dict[str, int]] | None:
    """The usage ledger's requests and cost (ticks) per key, summed over days and models,
    read from Redis (`service/usage/ledger.py`: `gw:{tag}:led:<day>:<key id>` hashes of
    "<measure>|<model>" -> int); None where the gateway keeps no ledger."""
    found: dict[str, dict[str, int]] = {}
    for name in client.scan_iter(match="*:led:*", count=1000):
        match = _LEDGER.search(name.decode())
        if not match:
            continue
        row = found.setdefault(match[1], {"requests": 0, "cost_ticks": 0})
        for field_name, value in client.hgetall(name).items():
            measure = field_name.decode().split("|", 1)[0]
            if measure == "r":
                row["requests"] += int(value)
            elif measure == "$":
                row["cost_ticks"] += int(value)
    return found or None


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    xs, ys = zip(*points, strict=True)
    if len(set(xs)) < 2:
        return None
    return statistics.linear_regression(xs, ys).slope * 60


# -- one run ---------------------------------------------------------------------------------


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Start everything for one failure mode, soak it, read Redis, stop everything."""
    rng = random.Random(args.seed)
    soak = Soak(
        mode,
        args.minutes * 60,
        args.lease_seconds,
        args.fault_every,
        args.clients,
        rng,
        workdir / mode,
    )
    soak.workdir.mkdir()
    procs: list[Proc] = []
    soak.t0 = time.monotonic()
    redis = FaultyRedis(soak.workdir, soak.t0)
    try:
        simulator = start_simulator(soak.workdir)
        procs.append(simulator)
        redis.start()
        keys = write_keys(soak.workdir)
        for i in range(args.replicas):
            replica = start_gateway(
                soak.workdir,
                simulator,
                redis.url,
                name=f"replica-{i}",
                keys_file=keys,
                RATE_LIMIT_FAILURE_MODE=mode,
                CONCURRENCY_LEASE_SECONDS=str(args.lease_seconds),
            )
            procs.append(replica)
            soak.replicas.append(replica)
        if _serves_responses(soak.replicas[0]):
            soak.kinds += ("responses-stream",)
        print(f"mode {mode}: {args.minutes:g} min, kinds {', '.join(soak.kinds)}", flush=True)
        soak.t0 = redis.t0 = time.monotonic()
        uvloop.run(_soak(soak, redis))
        traffic_end = soak.now()
        client = redis_py.Redis.from_url(redis.url)
        time.sleep(1.0)  # the last releases land
        stray_end = stray_slots(client)
        time.sleep(args.lease_seconds + 2)
        stray_later = stray_slots(client)
        counters = request_counters(client)
        usage = ledger(client)
        client.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.stop()
    summary = _summary(soak, redis, traffic_end, stray_end, stray_later, counters, usage)
    _attach_log_lines(summary["problem_samples"], soak.replicas, mode)
    return summary


def _attach_log_lines(problems: list[dict], replicas: list[Proc], mode: str) -> None:
    """Each sampled problem gets its replica's log lines that name its request id."""
    logs = [r.log.read_text(errors="replace").splitlines() for r in replicas]
    for problem in problems:
        wanted = re.compile(rf"soak-{mode}-{problem['n']}(?!\d)")
        lines = logs[problem["replica"]]
        problem["log"] = [line[:500] for line in lines if wanted.search(line)][:5]


async def _soak(soak: Soak, redis: FaultyRedis) -> None:
    deadline = soak.seconds
    last_fault = deadline - max(soak.lease_seconds, 10.0) - 5.0
    sampler = asyncio.ensure_future(soak.sample(deadline + 1))
    faults = asyncio.ensure_future(soak.faults(redis, last_fault))
    try:
        await soak.traffic(deadline)
        await faults
    finally:
        for task in (sampler, faults):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _serves_responses(replica: Proc) -> bool:
    """Whether the gateway has the Responses route: a body it must refuse (no `input`) gets
    400 there, and 404 where there is no such route; a refusal spends nothing, so the probe
    leaves the counters the soak compares untouched."""
    import httpx

    headers = {"authorization": f"Bearer {secret(KEYS[0][0])}", "content-type": "application/json"}
    try:
        answer = httpx.post(
            replica.url + PATHS["responses"], content=b'{"model": "grok-4"}', headers=headers
        )
    except httpx.HTTPError:
        return False
    return answer.status_code == 400


def _summary(
    soak: Soak,
    redis: FaultyRedis,
    traffic_end: float,
    stray_end: dict[str, int],
    stray_later: dict[str, int],
    counters: dict[str, int],
    usage: dict[str, dict[str, int]] | None,
) -> dict:
    outcomes = soak.outcomes
    by_result = Counter(o.result for o in outcomes)
    reasons = {
        result: dict(Counter(o.reason for o in outcomes if o.result == result).most_common())
        for result in ("refused", "failed", "broken")
    }
    windows = [(f.started - 1.5, f.back + 3.0) for f in redis.faults]

    def near_fault(o: Outcome) -> bool:
        return any(start <= o.ended and o.started <= end for start, end in windows)

    problems = [o for o in outcomes if o.result in ("failed", "broken")]
    admitted: Counter[str] = Counter()
    for o in outcomes:
        if o.status == 200:
            admitted[f"k:{o.key}"] += 1
            tenant = next(t for k, t, _ in KEYS if k == o.key)
            if tenant:
                admitted[f"t:{tenant}"] += 1
    charges = [
        {
            "who": who,
            "answered_200": admitted.get(who, 0),
            "redis_counter": counters.get(who, 0),
            "difference": counters.get(who, 0) - admitted.get(who, 0),
        }
        for who in sorted(set(admitted) | set(counters))
    ]
    ledger_rows = None
    if usage is not None:
        ledger_rows = []
        for key_id, _, _ in KEYS:
            row = usage.get(key_id, {})
            seen = sum(o.cost_ticks for o in outcomes if o.key == key_id and o.status == 200)
            ledger_rows.append(
                {
                    "key": key_id,
                    "answered_200": admitted.get(f"k:{key_id}", 0),
                    "ledger_requests": row.get("requests", 0),
                    "cost_seen_usd": str(Decimal(seen) / TICKS_PER_USD),
                    "ledger_cost_usd": str(Decimal(row.get("cost_ticks", 0)) / TICKS_PER_USD),
                }
            )
    memory = []
    for i, replica in enumerate(soak.replicas):
        fit = [s for s in soak.samples if s["t"] >= min(FIT_AFTER_SECONDS, soak.seconds / 5)]
        rss = [(s["t"], s[f"rss_mb_{i}"]) for s in fit]
        fds = [(s["t"], s[f"fds_{i}"]) for s in fit]
        modes = Counter(s[f"limiter_{i}"] for s in soak.samples)
        memory.append(
            {
                "replica": replica.name,
                "rss_mb_first": soak.samples[0][f"rss_mb_{i}"] if soak.samples else None,
                "rss_mb_last": soak.samples[-1][f"rss_mb_{i}"] if soak.samples else None,
                "rss_mb_per_min": slope_per_minute(rss),
                "fds_first": soak.samples[0][f"fds_{i}"] if soak.samples else None,
                "fds_last": soak.samples[-1][f"fds_{i}"] if soak.samples else None,
                "fds_per_min": slope_per_minute(fds),
                "limiter_samples": dict(modes),
            }
        )
    return {
        "mode": soak.mode,
        "minutes": round(traffic_end / 60, 2),
        "lease_seconds": soak.lease_seconds,
        "replicas": len(soak.replicas),
        "clients": soak.clients,
        "keys": [{"id": k, "tenant": t, "concurrent": c} for k, t, c in KEYS],
        "kinds": list(soak.kinds),
        "faults": [f.public() for f in redis.faults],
        "requests": len(outcomes),
        "outcomes": dict(by_result),
        "reasons": reasons,
        "kinds_count": dict(Counter(o.kind for o in outcomes)),
        "problems_near_fault": sum(near_fault(o) for o in problems),
        "problem_samples": [asdict(o) for o in problems[:20]],
        "stray_slots_at_end": stray_end,
        "stray_slots_a_lease_later": stray_later,
        "charges": charges,
        "ledger": ledger_rows,
        "ledger_overcharged": None
        if ledger_rows is None
        else sum(max(0, r["ledger_requests"] - r["answered_200"]) for r in ledger_rows),
        "ledger_cost_over_seen_usd": None
        if ledger_rows is None
        else format(
            sum(Decimal(r["ledger_cost_usd"]) - Decimal(r["cost_seen_usd"]) for r in ledger_rows),
            "f",
        ),
        "overcharged": sum(max(0, c["difference"]) for c in charges if c["who"].startswith("k:")),
        "uncounted": sum(max(0, -c["difference"]) for c in charges if c["who"].startswith("k:")),
        "memory": memory,
        "samples": soak.samples,
    }


# -- report ----------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = "+.2f") -> str:
    return "-" if value is None else format(value, spec)


def render(run: dict) -> str:
    """One mode's result as markdown (also printed)."""
    out = run["outcomes"]
    faults = Counter(f["kind"] for f in run["faults"])
    fault_text = ", ".join(f"{faults[k]} {k}" for k in KINDS if faults[k])
    outages = [f["outage_s"] for f in run["faults"]]
    reasons = run["reasons"]

    def listed(result: str) -> str:
        found = reasons.get(result) or {}
        return "; ".join(f"{r or '?'}: {n}" for r, n in found.items()) or "-"

    kinds = ", ".join(f"{k} {v}" for k, v in run["kinds_count"].items())
    stray_end = sum(run["stray_slots_at_end"].values())
    stray_later = sum(run["stray_slots_a_lease_later"].values())
    lines = [
        f"**`RATE_LIMIT_FAILURE_MODE={run['mode']}`**: {run['minutes']:g} min, "
        f"{run['replicas']} replicas, {run['clients']} clients on {len(run['keys'])} keys "
        f"(2 tenants, concurrency caps {', '.join(str(k['concurrent']) for k in run['keys'])}), "
        f"{', '.join(run['kinds'])}; faults: {fault_text or 'none'}"
        + (f" (outages {min(outages):g}-{max(outages):g} s)" if outages else "")
        + f"; lease {run['lease_seconds']:g} s.",
        "",
        "| measure | value | |",
        "| --- | --- | --- |",
        f"| requests | {run['requests']} ({kinds}) | |",
        f"| ok (200, complete) | {out.get('ok', 0)} | |",
        f"| refused with a documented status | {out.get('refused', 0)} ({listed('refused')}) | |",
        f"| failed (other status, no answer) | {out.get('failed', 0)} ({listed('failed')}) "
        f"| {'ok' if not out.get('failed') else 'MISSED'} |",
        f"| broken (200, incomplete) | {out.get('broken', 0)} ({listed('broken')}) "
        f"| {'ok' if not out.get('broken') else 'MISSED'} |",
        f"| stray slots right after the traffic | {stray_end} | |",
        f"| stray slots a lease later (must be 0) | {stray_later} "
        f"| {'ok' if stray_later == 0 else 'MISSED'} |",
        f"| requests charged in Redis beyond the 200s answered (keys) | {run['overcharged']} "
        f"| {'ok' if run['overcharged'] == 0 else 'MISSED'} |",
        f"| 200s not counted in Redis (keys; local fallback) | {run['uncounted']} | "
        f"{'ok' if run['mode'] == 'local' or run['uncounted'] == 0 else 'MISSED'} |",
    ]
    if run.get("ledger") is not None:
        over = run["ledger_overcharged"]
        lines.append(
            f"| ledger requests beyond the 200s answered (keys) | {over} "
            f"| {'ok' if over == 0 else 'MISSED'} |"
        )
        lines.append(
            f"| ledger cost minus the cost clients were shown, USD "
            f"| {run['ledger_cost_over_seen_usd']} | |"
        )
    for m in run["memory"]:
        lines.append(
            f"| {m['replica']}: RSS {m['rss_mb_first']:.0f} -> {m['rss_mb_last']:.0f} MB, "
            f"fds {m['fds_first']} -> {m['fds_last']} | "
            f"{_fmt(m['rss_mb_per_min'])} MB/min, {_fmt(m['fds_per_min'])} fds/min | |"
        )
    lines += [
        "",
        "| counter | 200s answered | Redis day counter | difference |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c['who']} | {c['answered_200']} | {c['redis_counter']} | {c['difference']:+d} |"
        for c in run["charges"]
    ]
    if run.get("ledger") is not None:
        lines += [
            "",
            "| key | 200s answered | ledger requests | cost clients saw, USD | ledger cost, USD |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {row['key']} | {row['answered_200']} | {row['ledger_requests']} "
            f"| {row['cost_seen_usd']} | {row['ledger_cost_usd']} |"
            for row in run["ledger"]
        ]
    return "\n".join(lines)


def write_section(runs: list[dict], meta: dict) -> None:
    """Make this run BENCHMARKS.md's "Faults and soak" section (replacing what was there)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head, _, _ = text.partition("\n## Faults and soak\n")
    intro = """
## Faults and soak

`python -m bench.soak` (see its docstring): mixed traffic against two gateway replicas on one
redis-server that is killed (SIGKILL, restarted on the same port), hung (SIGSTOP, SIGCONT a few
seconds later) and restarted in turn. Stray slots are live concurrency leases left in Redis when
nothing is in flight. Charges compare each key's and tenant's day-window request counter in
Redis, and the usage ledger's requests and cost (where the gateway keeps one), with the 200
answers its clients got and the `cost_in_usd_ticks` those answers showed. RSS and fd slopes are
least-squares fits over the run after its first 30 s.
"""
    body = (
        f"### {meta['label']}\n\n"
        f"Measured {meta['date']} UTC, {meta['commit']}, with `{meta['command']}` "
        f"({meta['seconds']} s; load average before: {meta['load']}).\n\n"
        + (f"{meta['note']}\n\n" if meta.get("note") else "")
        + "\n\n".join(render(run) for run in runs)
        + "\n"
    )
    path.write_text(head.rstrip("\n") + "\n" + intro + "\n" + body.strip() + "\n")


def _commit() -> str:
    """The last commit that changed the gateway (service/), and whether it has local changes."""
    done = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", "service"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "service"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return "service/ at " + done.stdout.strip() + (" (with local changes)" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=5.0, help="per failure mode")
    parser.add_argument("--modes", default="local", help="comma-separated: local, closed")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--fault-every", type=float, default=20.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--label", default="soak", help="BENCHMARKS.md subsection title")
    parser.add_argument("--note", default="", help="a paragraph under the title")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-report", action="store_true", help="don't write BENCHMARKS.md")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"local", "closed"}:
        parser.error("--modes takes local and/or closed")
    # Ctrl-C and SIGTERM stop everything started, even when started in the background (where
    # a shell hands SIGINT over ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    argv = ["python -m bench.soak", f"--minutes {args.minutes:g}"]
    if args.modes != "local":
        argv.append(f"--modes {args.modes}")
    meta = {
        "label": args.label,
        "note": args.note,
        "command": " ".join(argv),
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="grok-soak-"))
    runs = []
    try:
        for mode in modes:
            runs.append(run_mode(mode, args, workdir))
            print(render(runs[-1]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["seconds"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    if not args.no_report:
        write_section(runs, meta)
    clean = all(
        not r["outcomes"].get("failed")
        and not r["outcomes"].get("broken")
        and not r["stray_slots_a_lease_later"]
        and r["overcharged"] == 0
        and not r.get("ledger_overcharged")
        for r in runs
    )
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
