"""Per-key request, token, spend and concurrency budgets, shared by every replica in Redis."""

from __future__ import annotations

from service.limiter.base import Decision, Limiter, LimiterUnavailable, WindowState
from service.limiter.headers import rate_limit_headers
from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy, Window, parse_rates
from service.usage.ledger import Ledger, MemoryLedger, RedisLedger


def create_limiter(
    redis_url: str | None,
    failure_mode: str = "local",
    lease_seconds: float = 30.0,
    redis_timeout: float = 1.0,
    pool_size: int = 32,
    key_prefix: str = "gw",
    retention_days: int = 400,
    ledger: MemoryLedger | None = None,
) -> Limiter:
    """Memory limiter without a URL; otherwise Redis behind the failover of `failure_mode`.

    `retention_days`: how long the usage ledger keeps a day (USAGE_RETENTION_DAYS); `ledger`:
    where the memory limiter writes released requests (the ledger itself without Redis).
    Raises ValueError for a URL it cannot use.
    """
    memory = MemoryLimiter(lease_seconds, key_prefix, ledger or MemoryLedger(retention_days))
    if redis_url is None:
        return memory
    from service.limiter.failover import FailoverLimiter
    from service.limiter.redis_store import RedisLimiter
    from service.redis.connection import connect, connect_shared, redis_address

    redis = RedisLimiter(
        connect(redis_url, redis_timeout, pool_size),
        lease_seconds,
        key_prefix,
        multiplexed=connect_shared(redis_url, redis_timeout),
        timeout=redis_timeout,
        retention_days=retention_days,
    )
    return FailoverLimiter(redis, memory, failure_mode, redis_address(redis_url))


def create_ledger(
    redis_url: str | None, memory: MemoryLedger, redis_timeout: float = 1.0, key_prefix: str = "gw"
) -> Ledger:
    """The ledger the usage reports read: Redis's with a URL, else `memory` (which the memory
    limiter writes). Raises ValueError for a URL it cannot use."""
    if redis_url is None:
        return memory
    from service.redis.connection import connect

    return RedisLedger(connect(redis_url, redis_timeout, 4), key_prefix)


__all__ = [
    "Decision",
    "LimitPolicy",
    "Limiter",
    "LimiterUnavailable",
    "Window",
    "WindowState",
    "create_ledger",
    "create_limiter",
    "parse_rates",
    "rate_limit_headers",
]
