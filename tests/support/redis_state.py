"""What the limiter left in a real Redis: counters summed over windows, live leases, and the
key-name patterns of one key's budgets."""

from __future__ import annotations

import redis.asyncio as aioredis


async def total(url: str, pattern: str) -> int:
    """The sum of every counter whose name matches `pattern` (all windows of one budget)."""
    client = aioredis.from_url(url)
    try:
        names = await client.keys(pattern)
        return sum(int(v) for v in await client.mget(names)) if names else 0
    finally:
        await client.aclose()


async def live_slots(url: str, name: str) -> int:
    """Leases in a concurrency set that have not expired on Redis's clock: slots held."""
    client = aioredis.from_url(url)
    try:
        seconds, micros = await client.time()
        return await client.zcount(name, seconds * 1000 + micros // 1000, "+inf")
    finally:
        await client.aclose()


def request_units(key_id: str) -> str:
    return f"gw:{{k:{key_id}}}:req:k:{key_id}:*"


def token_units(key_id: str) -> str:
    return f"gw:{{k:{key_id}}}:tok:k:{key_id}:*"


def slots(key_id: str) -> str:
    return f"gw:{{k:{key_id}}}:conc:{key_id}"
