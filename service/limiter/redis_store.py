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

Faults (a hung Redis runs the commands queued on its connections once it resumes, however
late): every script call carries a deadline in Redis's time (`clock`), a little before the
caller gives up, and a script that starts past it does nothing. A release Redis has not
confirmed is kept (bounded) and applied again once Redis answers; each release writes a
short-lived marker under its admission's id, so one whose reply was lost is not applied
twice. An admission given up with a lease is followed by the lease's removal.

Admit and release go over the process's multiplexed connection when there is one (see
`multiplexed`), else through redis-py's scripts; everything else uses redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.limiter.base import Decision, WindowState, new_id
from service.limiter.clock import RedisClock
from service.limiter.multiplexed import MultiplexedConnection, MultiplexedScript
from service.limiter.plan import Plan, build_plan
from service.limiter.policy import LimitPolicy
from service.observability.metrics import LIMITER_REPLAY_DROPPED, LIMITER_REPLAY_PENDING

log = logging.getLogger("service.limiter")

STORE_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

# A script must start this much before the caller's timeout, so that its reply still has
# time to arrive: past the deadline it does nothing.
_DEADLINE_SHARE = 0.75
_MARKER_MS = 300_000  # how long a release's marker outlives it (a replay comes sooner)
_REPLAY_LIMIT = 100_000  # releases kept while Redis is unreachable; the oldest go first
_REPLAY_BATCH = 256
_EXPIRED = -1  # a script's status when it started past its deadline

# KEYS: request window bases..., token window bases..., [concurrency set]
# ARGV: deadline_ms, n_requests, n_tokens, has_concurrency, (limit, seconds) per window...,
#       [cap, lease_ms, lease_id]
# Returns: now_ms, allowed (1, 0, or -1: past the deadline, nothing done), reason, retry_ms,
#          req (limit, remaining, reset_ms, seconds), tok (same)   (limit -1: none)
ADMIT = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
if deadline > 0 and now_ms > deadline then return {now_ms, -1, '', 0} end
local nreq, ntok, hasconc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local a = 5
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
local out = {now_ms, allowed and 1 or 0, reason, retry}
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

# KEYS: marker, request window bases..., token window bases..., [concurrency set]
# ARGV: deadline_ms, ended_ms (0: now), admitted_ms, marker_ms (0: no marker), n_requests,
#       n_tokens, has_concurrency, tokens, seconds per request window...,
#       seconds per token window..., [lease_id]
# Request windows are given only to replay a request admitted from memory (one unit each,
# in the window of its admission); tokens go to the windows of the moment it ended.
# Returns: now_ms, status (1 applied, 0 applied before: skipped, -1 past the deadline)
RELEASE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
if deadline > 0 and now_ms > deadline then return {now_ms, -1} end
local marker_ms = tonumber(ARGV[4])
if marker_ms > 0 and not redis.call('SET', KEYS[1], 1, 'NX', 'PX', marker_ms) then
  return {now_ms, 0}
end
local ended, admitted = tonumber(ARGV[2]), tonumber(ARGV[3])
if ended == 0 then ended = now_ms end
local nreq, ntok, hasconc = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local tokens = tonumber(ARGV[8])
local function add(base, period, at, amount)
  local index = math.floor(at / (period * 1000))
  local name = base .. ':' .. index
  if redis.call('INCRBY', name, amount) == amount then
    redis.call('PEXPIREAT', name, (index + 1) * period * 1000 + 1000)
  end
end
for i = 1, nreq do add(KEYS[1 + i], tonumber(ARGV[8 + i]), admitted, 1) end
if tokens > 0 then
  for i = nreq + 1, nreq + ntok do add(KEYS[1 + i], tonumber(ARGV[8 + i]), ended, tokens) end
end
if hasconc == 1 then
  redis.call('ZREM', KEYS[2 + nreq + ntok], ARGV[9 + nreq + ntok])
end
return {now_ms, 1}
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


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A policy's plan and the script arguments that do not change between calls."""

    plan: Plan
    admit_keys: list[str]
    admit_args: list[int | str]  # ARGV[1], the deadline, is set per call
    token_keys: list[str]
    token_periods: list[int]


@dataclass(slots=True)
class _Pending:
    """A release Redis has not confirmed: applied when Redis answers again."""

    compiled: _Compiled
    decision: Decision
    tokens: int
    ended_ms: int  # Redis's time when the request ended (estimated)
    admitted_ms: int  # Redis's time when it was admitted (estimated)


class RedisLimiter:
    """Admissions against Redis. Raises redis/OS errors; the failover wrapper decides."""

    mode = "redis"

    def __init__(
        self,
        redis: Redis,
        lease_seconds: float = 30.0,
        prefix: str = "gw",
        multiplexed: MultiplexedConnection | None = None,
        timeout: float = 1.0,
        clock: RedisClock | None = None,
        replay_limit: int = _REPLAY_LIMIT,
    ) -> None:
        self.redis = redis
        self.multiplexed = multiplexed
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.prefix = prefix
        self.clock = clock or RedisClock()
        self._budget = timeout * _DEADLINE_SHARE  # seconds a script may take to start
        if multiplexed is not None:
            self._admit = MultiplexedScript(multiplexed, ADMIT)
            self._release = MultiplexedScript(multiplexed, RELEASE)
        else:
            self._admit = redis.register_script(ADMIT)
            self._release = redis.register_script(RELEASE)
        self._refresh = redis.register_script(REFRESH)
        self._plans: dict[LimitPolicy, _Compiled] = {}
        self._leases: dict[str, str] = {}  # lease id -> concurrency set, held by this process
        self._refresher: asyncio.Task[None] | None = None
        self._pending: collections.deque[_Pending] = collections.deque(maxlen=replay_limit)
        self._overflowing = False  # logged once per outage

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

    @property
    def pending(self) -> int:
        """Releases kept for when Redis answers again."""
        return len(self._pending)

    async def ping(self) -> None:
        """Check the connections admissions use (opening them) and learn Redis's clock."""
        sent = self.clock.local_ms()
        if self.multiplexed is not None:
            seconds, micros = await self.multiplexed.execute("TIME")
        else:
            seconds, micros = await self.redis.time()
        self.clock.observe(sent, self.clock.local_ms(), int(seconds) * 1000 + int(micros) // 1000)
        await self.redis.ping()

    async def reset_connections(self) -> None:
        """Drop pooled connections (after an outage they point at a server that is gone)."""
        if self.multiplexed is not None:
            await self.multiplexed.aclose()
        pool = getattr(self.redis, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()

    def _compiled(self, policy: LimitPolicy) -> _Compiled:
        compiled = self._plans.get(policy)
        if compiled is None:
            plan = build_plan(policy, self.prefix)
            windows = plan.requests + plan.tokens
            keys = [w.key for w in windows]
            args: list[int | str] = [0, len(plan.requests), len(plan.tokens), 0]
            for window in windows:
                args += [window.limit, window.seconds]
            if plan.concurrency_key is not None:
                keys.append(plan.concurrency_key)
                args[3] = 1
                args += [plan.concurrent or 0, self.lease_ms]
            compiled = self._plans[policy] = _Compiled(
                plan,
                keys,
                args,
                [w.key for w in plan.tokens],
                [w.seconds for w in plan.tokens],
            )
        return compiled

    async def admit(self, policy: LimitPolicy) -> Decision:
        compiled = self._compiled(policy)
        plan = compiled.plan
        admission = new_id()
        lease = admission if plan.concurrency_key is not None else None
        args = [*compiled.admit_args, lease] if lease else list(compiled.admit_args)
        try:
            result = await self._call(self._admit, compiled.admit_keys, args)
        except STORE_ERRORS:
            if lease is not None:  # it may have run before its deadline: take the slot back
                given_up = Decision(allowed=True, lease=lease, store="redis", id=admission)
                self.defer(policy, given_up, 0)
            raise
        allowed = result[1] == 1
        if allowed and lease is not None:
            self._leases[lease] = plan.concurrency_key  # type: ignore[assignment]
        reason = result[2].decode() if isinstance(result[2], bytes) else result[2]
        return Decision(
            allowed=allowed,
            reason=reason or None,
            retry_after=0 if allowed else max(1, math.ceil(result[3] / 1000)),
            requests=_state(result[4:8]),
            tokens=_state(result[8:12]),
            lease=lease if allowed else None,
            store="redis",
            id=admission,
            admitted_at=time.monotonic(),
        )

    async def release(self, policy: LimitPolicy, decision: Decision, tokens: int) -> None:
        """Free the slot and charge `tokens` (and, for a request admitted from memory, its
        request unit). Unconfirmed, the release is kept for `replay` and the error raised."""
        pending = self._pending_of(policy, decision, tokens)
        if pending is None:
            return  # nothing to do: no round trip
        try:
            await self._apply(pending, replay=False)
        except STORE_ERRORS:
            self._keep(pending)
            raise

    def defer(self, policy: LimitPolicy, decision: Decision, tokens: int) -> None:
        """Keep a release for `replay`, without trying Redis now (it is known down)."""
        pending = self._pending_of(policy, decision, tokens)
        if pending is not None:
            self._keep(pending)

    async def replay(self) -> int:
        """Apply every kept release; how many were applied.

        Raises the store error that stopped it: the releases not applied stay kept.
        """
        applied = 0
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), _REPLAY_BATCH))]
            results = await asyncio.gather(
                *(self._apply(pending, replay=True) for pending in batch), return_exceptions=True
            )
            failure: BaseException | None = None
            for pending, result in zip(batch, results, strict=True):
                if isinstance(result, ResponseError):  # would fail forever: say so, go on
                    log.error("dropped a release Redis refuses to run: %s", result)
                elif isinstance(result, BaseException):
                    self._keep(pending)
                    failure = result
                else:
                    applied += 1
            LIMITER_REPLAY_PENDING.set(len(self._pending))
            if failure is not None:
                raise failure
        self._overflowing = False
        return applied

    def _pending_of(self, policy: LimitPolicy, decision: Decision, tokens: int) -> _Pending | None:
        compiled = self._compiled(policy)
        plan = compiled.plan
        leased = decision.store == "redis" and decision.lease is not None
        if leased:
            # Whatever becomes of this release, the refresher must stop renewing the lease.
            self._leases.pop(decision.lease, None)  # type: ignore[arg-type]
        units = decision.store == "memory" and bool(plan.requests)
        if not (leased or units or (tokens > 0 and plan.tokens)):
            return None
        if not decision.id:
            decision.id = new_id()
        ended = self.clock.redis_ms(self.clock.local_ms())
        age_ms = int((time.monotonic() - decision.admitted_at) * 1000) if units else 0
        return _Pending(compiled, decision, max(0, tokens), ended, ended - age_ms)

    async def _apply(self, pending: _Pending, replay: bool) -> None:
        compiled, decision = pending.compiled, pending.decision
        plan = compiled.plan
        units = plan.requests if decision.store == "memory" else ()
        countable = bool(units) or (pending.tokens > 0 and bool(plan.tokens))
        keys = [f"{plan.base}:rel:{decision.id}", *(w.key for w in units), *compiled.token_keys]
        args: list[int | str] = [
            0,
            pending.ended_ms if replay else 0,
            pending.admitted_ms,
            _MARKER_MS if countable else 0,
            len(units),
            len(plan.tokens),
            0,
            pending.tokens,
            *(w.seconds for w in units),
            *compiled.token_periods,
        ]
        if decision.store == "redis" and decision.lease is not None:
            keys.append(plan.concurrency_key)  # type: ignore[arg-type]
            args[6] = 1
            args.append(decision.lease)
        await self._call(self._release, keys, args)

    async def _call(self, script: Any, keys: list[str], args: list[int | str]) -> list[Any]:
        """Run a script with a deadline (ARGV[1]) a little before this caller gives up.

        A reply saying it started past the deadline comes from a Redis that answers but
        whose clock this process misjudged (or a wait for a pooled connection): the reply
        corrected the clock, so it is tried once more before counting as a timeout.
        """
        for _ in range(2):
            args[0] = self.clock.deadline_ms(self._budget)
            sent = self.clock.local_ms()
            result = await script(keys, args)
            self.clock.observe(sent, self.clock.local_ms(), int(result[0]))
            if result[1] != _EXPIRED:
                return result
        raise RedisTimeoutError("the limiter's script reached Redis after its deadline")

    def _keep(self, pending: _Pending) -> None:
        if len(self._pending) == self._pending.maxlen:
            LIMITER_REPLAY_DROPPED.inc()
            if not self._overflowing:
                self._overflowing = True
                log.error(
                    "%d releases kept for Redis: dropping the oldest (their charges are lost; "
                    "their slots free themselves within the lease)",
                    len(self._pending),
                )
        self._pending.append(pending)
        LIMITER_REPLAY_PENDING.set(len(self._pending))

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
