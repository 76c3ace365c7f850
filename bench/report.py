"""The benchmark's output: its table, its plot and BENCHMARKS.md, with the guard's verdicts."""

from __future__ import annotations

import contextlib
import datetime
import platform
from importlib import metadata
from pathlib import Path

import psutil

from bench.guard import Check

COLUMNS = (
    ("target", "target", "{}"),
    ("scenario", "scenario", "{}"),
    ("shape", "shape", "{}"),
    ("conc", "concurrency", "{}"),
    ("streams/s", "streams_per_s", "{:.0f}"),
    ("TTFB p50 ms", "ttfb_p50_ms", "{:.1f}"),
    ("TTFB p99 ms", "ttfb_p99_ms", "{:.1f}"),
    ("total p50 ms", "total_p50_ms", "{:.1f}"),
    ("total p99 ms", "total_p99_ms", "{:.1f}"),
    ("failed", "failed", "{}"),
    ("CPU s/1k", "cpu_s_per_1000", "{:.2f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
    ("Redis scripts/req", "redis_scripts_per_request", "{:.2f}"),
    ("Redis cmds/req", "redis_commands_per_request", "{:.1f}"),
)


def _cell(result: dict, key: str, fmt: str) -> str:
    value = result.get(key)
    return "-" if value is None else fmt.format(value)


def table(results: list[dict]) -> str:
    header = "| " + " | ".join(title for title, _, _ in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    rows = ["| " + " | ".join(_cell(r, k, f) for _, k, f in COLUMNS) + " |" for r in results]
    return "\n".join([header, rule, *rows])


def print_table(results: list[dict]) -> None:
    print(table(results))


def write_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for target in dict.fromkeys(r["target"] for r in results):
        points = sorted(
            (r["concurrency"], r["streams_per_s"], r["ttfb_p50_ms"])
            for r in results
            if r["target"] == target
            and (r["scenario"].startswith("curve@") or r["scenario"] in ("ttft@50", "realistic"))
        )
        if not points:
            continue
        xs = [p[0] for p in points]
        left.plot(xs, [p[1] for p in points], marker="o", label=target)
        right.plot(xs, [p[2] for p in points], marker="o", label=target)
    for axis, title in ((left, "streams/s"), (right, "TTFB p50 (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent streams (20 chunks, 20 ms apart)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _versions() -> str:
    names = ("starlette", "uvicorn", "httpx", "httpx-aiohttp", "aiohttp", "redis", "uvloop")
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def guard_table(guard: list[Check]) -> str:
    rows = [f"| {c.target} | {c.measured} | {c.verdict} |" for c in guard]
    return "\n".join(["| target | measured | |", "| --- | --- | --- |", *rows])


def print_guard(guard: list[Check], enforced: bool) -> None:
    print("\nGuard" + ("" if enforced else " (quick run: shown, not enforced)") + ":")
    for check in guard:
        print(f"  {check.verdict:>12}  {check.target}: {check.measured}")


METHOD = """\
All processes share this machine's cores on loopback: the simulator (the upstream, \
{shape}-shaped streams: 20 chunks, {shape_note}), the target, the load generator (its own \
process, which checks every stream is complete) and, for the Redis target, redis-server. \
Compare ratios, not absolute figures across runs.

- **floor-raw** (what the guard compares against): a plain ASGI callable under uvicorn \
(uvloop, httptools) that hands each request to one shared httpx `AiohttpTransport` and sends \
the bytes of `aiter_raw()` as they come. Nothing else.
- **floor-starlette**: the idiomatic pass-through on the same stack \
(`client.send(stream=True)` into a `StreamingResponse`); for reference.
- **gateway-memory / gateway-redis**: the gateway with auth, body validation, every limit \
kind (request windows, a tenant window, tokens, concurrency leases), the JSON access log and \
metrics; limits in memory, or in Redis (its own redis-server). `-2w`: two workers.
- Scenarios: `burst` (no spacing), `realistic` (chunks 20 ms apart, as a model streams them; \
asks for the usage chunk), `ttft@50`, `idle-streams` (many open streams at once), \
`non-streaming`, `responses-*` (the Responses API), `curve@N` (N concurrent, spaced).
- `paired:*` rows: the raw floor and the gateway both running, measured in alternation (half \
the rounds each first); throughput is judged on the median of the per-round ratios, which \
one run's drift on a shared machine cannot tilt. `shapes:*` rows: the raw floor and the \
gateway on an xAI-shaped and an OpenAI-shaped (`--openai-shapes`) simulator, all four \
running, in interleaved rounds."""

LEGEND = """\
CPU s/1k: CPU seconds of the target's process tree per 1,000 completed streams. Redis \
scripts/req: script calls (`INFO commandstats`: evalsha + eval) per request, the lease \
refreshes included; the admissions, and the releases, of one key in one event-loop turn \
share a call. Redis cmds/req: every command Redis ran, the scripts' own included."""


def write_markdown(
    results: list[dict], guard: list[Check], meta: dict, image: str, enforced: bool
) -> str:
    cpu = platform.processor() or platform.machine()
    date = meta.get("date") or f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
    load = f" Load average before the run: {meta['load']}." if meta.get("load") else ""
    xai = meta.get("default_shape", "xai") == "xai"
    shape = "xAI" if xai else "OpenAI"
    shape_note = (
        "each carrying the running `usage` with `cost_in_usd_ticks`"
        if xai
        else "usage on the last chunk only"
    )
    skipped = "".join(f"\n- not measured: {line}" for line in meta.get("skipped", ()))
    note = (
        ""
        if enforced
        else "\n\nA quick run: shorter, smaller scenarios; the guard is shown, not enforced."
    )
    return f"""# Benchmarks

Generated by `{meta["command"]}` on {date} UTC ({meta["seconds"]} s); the findings behind \
these figures are in [docs/performance.md](docs/performance.md). Machine: \
{psutil.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, \
{platform.platform()}, Python {platform.python_version()}; {_versions()}.{load}

## Method

{METHOD.format(shape=shape, shape_note=shape_note)}{skipped}

## Guard

`python -m bench` exits non-zero when a target below is missed (or not measured), or a stream \
failed.{note}

{guard_table(guard)}

Failed or truncated streams, all scenarios: {sum(r["failed"] for r in results)}.

## Figures

{table(results)}

{LEGEND}

![throughput and TTFB against concurrency]({image})
"""
