"""Load generator, run in its own process so its CPU is not charged to the target.

N workers loop requests for a duration (or each sends one, with --once), timing the first
body byte and the whole stream, and checking every stream is complete: the expected number
of chunks and `data: [DONE]` last. Prints one JSON object.
Usage: python -m bench.loadgen URL --key K --concurrency N (--duration S | --once) ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def run(args: argparse.Namespace) -> dict:
    body = json.dumps(
        {
            "model": "grok-4-1-fast-non-reasoning",
            "messages": [
                {"role": "user", "content": "Write a short story about a space adventure"}
            ],
            "stream": args.stream,
            "sim": {"chunks": args.chunks, "delay_ms": args.delay_ms},
        }
    ).encode()
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
            async with session.post(args.url, data=body, headers=headers) as response:
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
        if args.stream:
            if not raw.endswith(b"data: [DONE]\n\n") or raw.count(b"data: {") != args.chunks:
                fail("truncated")
                return
        elif b'"choices"' not in raw:
            fail("bad_body")
            return
        done += 1
        ttfb.append((first or end) - t0)
        total.append(end - t0)

    async def worker(session: aiohttp.ClientSession) -> None:
        if args.once:
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
    parser.add_argument("url")
    parser.add_argument("--key", default="x")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--once", action="store_true", help="each worker sends one request")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=0)
    parser.add_argument("--no-stream", dest="stream", action="store_false")
    args = parser.parse_args()
    import uvloop

    print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
