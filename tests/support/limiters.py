"""Redis limiters for tests: one per replica, on either client, and a policy of a key alone."""

from __future__ import annotations

import uuid

from service.limiter.policy import LimitPolicy, parse_rates
from service.limiter.redis_store import RedisLimiter
from service.redis.connection import connect
from service.redis.multiplexed import MultiplexedConnection

# Admit and release run over the multiplexed connection (redis:// and unix:// URLs) or
# through redis-py's scripts (TLS, Sentinel, Cluster): tests run on both.
CLIENTS = ["multiplexed", "redis-py"]


def replica(url: str, client: str = "multiplexed", **kwargs) -> RedisLimiter:
    """A limiter with connections of its own, as a separate replica has."""
    multiplexed = MultiplexedConnection.from_url(url) if client == "multiplexed" else None
    return RedisLimiter(connect(url), multiplexed=multiplexed, **kwargs)


def key_policy(
    requests: str = "1000000/hour", tokens: str = "", conc: int | None = None
) -> LimitPolicy:
    """A fresh key of its own (no tenant), so no counter is shared with another test."""
    return LimitPolicy(
        key_id=uuid.uuid4().hex[:12],
        tenant=None,
        requests=parse_rates(requests),
        tokens=parse_rates(tokens) if tokens else (),
        concurrent=conc,
    )
