"""Per-key request, token and concurrency budgets, shared by every replica through Redis."""

from __future__ import annotations

from service.limiter.base import Decision, Limiter, LimiterUnavailable, WindowState
from service.limiter.headers import rate_limit_headers
from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy, Window, parse_rates


def create_limiter(
    redis_url: str | None,
    failure_mode: str = "local",
    lease_seconds: float = 30.0,
    redis_timeout: float = 1.0,
    pool_size: int = 32,
    key_prefix: str = "gw",
    retention_days: int = 400,
) -> Limiter:
    """Memory limiter without a URL; otherwise Redis behind the failover of `failure_mode`.

    `retention_days`: how long the usage ledger keeps a day (USAGE_RETENTION_DAYS).
    Raises ValueError for a URL it cannot use.
    """
    memory = MemoryLimiter(lease_seconds, key_prefix, retention_days)
    if redis_url is None:
        return memory
    from service.limiter.failover import FailoverLimiter
    from service.limiter.redis_store import RedisLimiter
    from service.redis.connection import connect
    from service.redis.multiplexed import MultiplexedConnection

    redis = RedisLimiter(
        connect(redis_url, redis_timeout, pool_size),
        lease_seconds,
        key_prefix,
        multiplexed=MultiplexedConnection.from_url(redis_url, redis_timeout),
        timeout=redis_timeout,
        retention_days=retention_days,
    )
    return FailoverLimiter(redis, memory, failure_mode)


__all__ = [
    "Decision",
    "LimitPolicy",
    "Limiter",
    "LimiterUnavailable",
    "Window",
    "WindowState",
    "create_limiter",
    "parse_rates",
    "rate_limit_headers",
]
