"""Load generator, run in its own process so its CPU is not charged to the target.

N workers loop requests for a duration (or each sends one, with --once; or N in all, with
--requests), timing the first body byte and the whole stream, and checking every answer is
complete (`bench.streams`: the expected number of content chunks in either stream shape,
`data: [DONE]` or `response.completed` last). Prints one JSON object.
Usage: python -m bench.loadgen ROOT_URL --key K [--api chat|responses] --concurrency N
       (--duration S | --once | --requests N) ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from bench.streams import PATHS, check, request_body


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def run(args: argparse.Namespace) -> dict:
    body = request_body(args.api, args.stream, args.chunks, args.delay_ms, args.include_usage)
    url = args.url.rstrip("/") + PATHS[args.api]
    headers = {"authorization": f"Bearer {args.key}", "content-type": "application/json"}
    ttfb: list[float] = []
    total: list[float] = []
    failures: dict[str, int] = {}
    done = 0
    started = time.perf_counter()
    stop = started + args.duration

    def fail(reason: str) -> None:
        failures[reason] = failures.get(reason, 0) + 1

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal done
        t0 = time.perf_counter()
        first = None
        chunks: list[bytes] = []
        try:
            async with session.post(url, data=body, headers=headers) as response:
                async for data in response.content.iter_any():
                    if first is None:
                        first = time.perf_counter()
                    chunks.append(data)
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            fail(type(exc).__name__)
            return
        end = time.perf_counter()
        raw = b"".join(chunks)
        if status != 200:
            fail(f"http_{status}")
            return
        problem = check(args.api, args.stream, raw, args.chunks, args.include_usage)
        if problem is not None:
            fail(problem)
            return
        done += 1
        ttfb.append((first or end) - t0)
        total.append(end - t0)

    left = args.requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        if args.once:
            await one(session)
            return
        if left is not None:
            while left > 0:
                left -= 1
                await one(session)
            return
        while time.perf_counter() < stop:
            await one(session)

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "completed": done,
        "failed": sum(failures.values()),
        "failures": failures,
        "elapsed_s": elapsed,
        "streams_per_s": done / elapsed if elapsed else 0.0,
        "ttfb_p50_ms": percentile(ttfb, 50) * 1000,
        "ttfb_p99_ms": percentile(ttfb, 99) * 1000,
        "total_p50_ms": percentile(total, 50) * 1000,
        "total_p99_ms": percentile(total, 99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="the target's root URL; the path follows from --api")
    parser.add_argument("--api", choices=sorted(PATHS), default="chat")
    parser.add_argument("--include-usage", action="store_true", help="ask for the usage chunk")
    parser.add_argument("--key", default="x")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--once", action="store_true", help="each worker sends one request")
    parser.add_argument("--requests", type=int, help="exactly this many in all (not --duration)")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=0)
    parser.add_argument("--no-stream", dest="stream", action="store_false")
    args = parser.parse_args()
    import uvloop

    print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
