"""Counters in Redis, shared by every replica: one script round trip to admit, one to release.

Fixed windows aligned on the clock (window index = floor(now / period)), with `now` taken
from Redis `TIME` inside the script so every replica agrees on the windows whatever its own
clock says. A fixed window never refuses below, nor admits above, the stated rate within one
window — the contract. (A sliding-window counter approximates both ways; a sliding log
costs a list entry per unit, wrong for token budgets.) The script checks every window, the
token budget and the concurrency leases first and consumes only if all pass, so a refused
request spends nothing and concurrent admissions on any number of replicas cannot
over-admit: Redis runs each script atomically.

Concurrency slots are leases in a sorted set (member = lease id, score = expiry). Expired
leases are purged at admission, so a replica that died frees its slots within the lease
time; live ones are refreshed by one pipelined round trip per process every lease/3.

Admit and release go over the process's multiplexed connection when there is one (see
`multiplexed`), else through redis-py's scripts; everything else uses redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid

from redis.asyncio import Redis

from service.limiter.base import Decision, WindowState
from service.limiter.multiplexed import MultiplexedConnection, MultiplexedScript
from service.limiter.plan import Plan, build_plan
from service.limiter.policy import LimitPolicy

log = logging.getLogger("service.limiter")

# KEYS: request window bases..., token window bases..., [concurrency set]
# ARGV: n_requests, n_tokens, has_concurrency, (limit, seconds) per window...,
#       [cap, lease_ms, lease_id]
# Returns: allowed, reason, retry_ms, req (limit, remaining, reset_ms, seconds),
#          tok (limit, remaining, reset_ms, seconds)   (limit -1: none)
ADMIT = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nreq, ntok, hasconc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local a = 4
local reason, retry = '', 0
local names, used, limits, periods, resets, indexes = {}, {}, {}, {}, {}, {}
for i = 1, nreq + ntok do
  local limit, period = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local index = math.floor(now_ms / (period * 1000))
  local name = KEYS[i] .. ':' .. index
  local n = tonumber(redis.call('GET', name) or '0')
  local reset = (index + 1) * period * 1000 - now_ms
  names[i], used[i], limits[i] = name, n, limit
  periods[i], resets[i], indexes[i] = period, reset, index
  if i <= nreq then
    if n + 1 > limit then
      if reason == '' then reason = 'rate_limit_exceeded' end
      if reset > retry then retry = reset end
    end
  elseif n >= limit then
    if reason == '' then reason = 'tokens_limit_exceeded' end
    if reset > retry then retry = reset end
  end
end
local zset
if hasconc == 1 then
  zset = KEYS[nreq + ntok + 1]
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', now_ms)
  if redis.call('ZCARD', zset) >= tonumber(ARGV[a]) and reason == '' then
    reason, retry = 'concurrency_limit_exceeded', 1000
  end
end
local allowed = reason == ''
if allowed then
  for i = 1, nreq do
    if redis.call('INCR', names[i]) == 1 then
      redis.call('PEXPIREAT', names[i], (indexes[i] + 1) * periods[i] * 1000 + 1000)
    end
  end
  if zset then
    local lease_ms = tonumber(ARGV[a + 1])
    redis.call('ZADD', zset, now_ms + lease_ms, ARGV[a + 2])
    redis.call('PEXPIRE', zset, lease_ms * 2)
  end
end
local out = {allowed and 1 or 0, reason, retry}
local consumed = allowed and 1 or 0
for pass = 1, 2 do
  local first, last = 1, nreq
  if pass == 2 then first, last, consumed = nreq + 1, nreq + ntok, 0 end
  local best = nil
  for i = first, last do
    local remaining = math.max(0, limits[i] - used[i] - consumed)
    if best == nil or remaining < best[2] or (remaining == best[2] and resets[i] > best[3]) then
      best = {limits[i], remaining, resets[i], periods[i]}
    end
  end
  best = best or {-1, 0, 0, 0}
  for _, v in ipairs(best) do out[#out + 1] = v end
end
return out
"""

# KEYS: token window bases..., [concurrency set]; ARGV: n_tokens, has_concurrency, tokens,
# seconds per token window..., [lease_id]
RELEASE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ntok, hasconc, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tokens > 0 then
  for i = 1, ntok do
    local period = tonumber(ARGV[3 + i])
    local index = math.floor(now_ms / (period * 1000))
    local name = KEYS[i] .. ':' .. index
    if redis.call('INCRBY', name, tokens) == tokens then
      redis.call('PEXPIREAT', name, (index + 1) * period * 1000 + 1000)
    end
  end
end
if hasconc == 1 then
  redis.call('ZREM', KEYS[ntok + 1], ARGV[4 + ntok])
end
return 1
"""

# KEYS: concurrency set; ARGV: lease_ms, lease ids... (XX: a lease already expired stays gone)
REFRESH = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""


class RedisLimiter:
    """Admissions against Redis. Raises redis/OS errors; the failover wrapper decides."""

    mode = "redis"

    def __init__(
        self,
        redis: Redis,
        lease_seconds: float = 30.0,
        prefix: str = "gw",
        multiplexed: MultiplexedConnection | None = None,
    ) -> None:
        self.redis = redis
        self.multiplexed = multiplexed
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.prefix = prefix
        if multiplexed is not None:
            self._admit = MultiplexedScript(multiplexed, ADMIT)
            self._release = MultiplexedScript(multiplexed, RELEASE)
        else:
            self._admit = redis.register_script(ADMIT)
            self._release = redis.register_script(RELEASE)
        self._refresh = redis.register_script(REFRESH)
        self._plans: dict[LimitPolicy, tuple[Plan, list[str], list[int | str]]] = {}
        self._leases: dict[str, str] = {}  # lease id -> concurrency set, held by this process
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_leases())

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.multiplexed is not None:
            await self.multiplexed.aclose()
        await self.redis.aclose()

    def ready(self) -> tuple[bool, str]:
        return True, "redis"

    async def ping(self) -> None:
        """Check the connection admissions use (and open it, so the first request needn't)."""
        if self.multiplexed is not None:
            await self.multiplexed.execute("PING")
        await self.redis.ping()

    async def reset_connections(self) -> None:
        """Drop pooled connections (after an outage they point at a server that is gone)."""
        if self.multiplexed is not None:
            await self.multiplexed.aclose()
        pool = getattr(self.redis, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()

    def _compiled(self, policy: LimitPolicy) -> tuple[Plan, list[str], list[int | str]]:
        compiled = self._plans.get(policy)
        if compiled is None:
            plan = build_plan(policy, self.prefix)
            windows = plan.requests + plan.tokens
            keys = [w.key for w in windows]
            args: list[int | str] = [len(plan.requests), len(plan.tokens), 0]
            for window in windows:
                args += [window.limit, window.seconds]
            if plan.concurrency_key is not None:
                keys.append(plan.concurrency_key)
                args[2] = 1
                args += [plan.concurrent or 0, self.lease_ms]
            compiled = self._plans[policy] = (plan, keys, args)
        return compiled

    async def admit(self, policy: LimitPolicy) -> Decision:
        plan, keys, args = self._compiled(policy)
        lease = uuid.uuid4().hex if plan.concurrency_key is not None else None
        result = await self._admit(keys, [*args, lease] if lease else args)
        allowed = result[0] == 1
        if allowed and lease is not None:
            self._leases[lease] = plan.concurrency_key  # type: ignore[assignment]
        reason = result[1].decode() if isinstance(result[1], bytes) else result[1]
        return Decision(
            allowed=allowed,
            reason=reason or None,
            retry_after=0 if allowed else max(1, math.ceil(result[2] / 1000)),
            requests=_state(result[3:7]),
            tokens=_state(result[7:11]),
            lease=lease if allowed else None,
            store="redis",
        )

    async def release(self, policy: LimitPolicy, decision: Decision, tokens: int) -> None:
        plan, _, _ = self._compiled(policy)
        charge = tokens > 0 and bool(plan.tokens)
        if decision.lease is None and not charge:
            return  # nothing to do: no round trip
        keys = [w.key for w in plan.tokens]
        args: list[int | str] = [len(plan.tokens), 0, max(0, tokens)]
        args += [w.seconds for w in plan.tokens]
        if decision.lease is not None:
            self._leases.pop(decision.lease, None)
            keys.append(plan.concurrency_key)  # type: ignore[arg-type]
            args[1] = 1
            args.append(decision.lease)
        await self._release(keys, args)

    async def _refresh_leases(self) -> None:
        interval = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            by_set: dict[str, list[str]] = {}
            for lease, zset in list(self._leases.items()):
                by_set.setdefault(zset, []).append(lease)
            if not by_set:
                continue
            try:
                # One round trip for all of this process's leases: one script call per key.
                async with self.redis.pipeline(transaction=False) as pipe:
                    for zset, leases in by_set.items():
                        await self._refresh(keys=[zset], args=[self.lease_ms, *leases], client=pipe)
                    await pipe.execute()
            except Exception as exc:  # the leases expire by themselves if this keeps failing
                log.warning("could not refresh concurrency leases of %d keys: %s", len(by_set), exc)


def _state(values: list[int]) -> WindowState | None:
    limit, remaining, reset_ms, seconds = (int(v) for v in values)
    if limit < 0:
        return None
    return WindowState(limit, remaining, reset_ms / 1000, seconds)
