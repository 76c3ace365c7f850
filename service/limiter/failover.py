"""What happens when Redis is unreachable: RATE_LIMIT_FAILURE_MODE.

`local`: count on this replica's memory, report it (readiness body, a gauge, one log line
per transition), probe Redis every second and go back to it by itself. `closed`: refuse
with 503 `rate_limiter_unavailable` until Redis answers again. While Redis is known down,
requests don't wait on it: only the probe does. A Redis that answers but refuses writes
(out of memory under `noeviction`, a demoted master during a Sentinel or Cluster failover)
counts as down the same way, and the 503 says which.

Spend holds: Redis reports each key's and tenant's spend at every admission and release,
and memory counts on from what it last reported (`MemoryLimiter.saw_spend`), so a budget
spent before the outage stays refused, and one spent during it is refused once spent.

Nothing is lost on the way: the releases Redis did not confirm (slots, tokens, spend, ledger,
response ids) and the charges of requests admitted from memory are kept, and applied once
Redis answers again, before admissions return to it (see `redis_store`). Response ownership
falls back to memory too: every id this replica records or forgets is mirrored there.
The usage snapshot falls back to memory in `local` mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from redis.exceptions import OutOfMemoryError

from service.limiter.base import Decision, LimiterUnavailable, UsageSnapshot
from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy
from service.limiter.redis_store import STORE_ERRORS, RedisLimiter
from service.observability.metrics import LIMITER_FALLBACK, LIMITER_STORE_ERRORS
from service.usage.record import Charge

log = logging.getLogger("service.limiter")

_PROBE_SECONDS = 1.0


class FailoverLimiter:
    def __init__(
        self, redis: RedisLimiter, memory: MemoryLimiter, failure_mode: str, where: str = "redis"
    ) -> None:
        self.redis = redis
        self.memory = memory
        redis.spend_seen = memory.saw_spend  # a spent budget stays spent through an outage
        self.failure_mode = failure_mode
        self.where = where  # host:port, for the operator reading the warning
        self.down = False
        self.cause = "is unreachable"  # what the 503 says while down
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.redis.start()
        try:
            await self.redis.ping()
        except STORE_ERRORS as exc:
            self._went_down(exc)

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if not self.down and self.redis.pending:
            with contextlib.suppress(*STORE_ERRORS):
                await self.redis.replay()
        if self.redis.pending:
            log.error("shutting down with %d releases Redis never got", self.redis.pending)
        await self.redis.aclose()

    def ready(self) -> tuple[bool, str]:
        if not self.down:
            return True, "redis"
        if self.failure_mode == "local":
            return True, "local fallback: redis unreachable, counting per replica"
        return False, "redis unreachable"

    async def admit(
        self, policy: LimitPolicy, owned: Sequence[str] = (), hold: int = 0
    ) -> Decision:
        if not self.down:
            try:
                return await self.redis.admit(policy, owned, hold)
            except STORE_ERRORS as exc:
                self._went_down(exc)
        if self.failure_mode == "closed":
            raise LimiterUnavailable(self.cause)
        return self.memory.admit_now(policy, owned, hold)

    async def release(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        if decision.store == "memory":
            self.memory.release_now(policy, decision, charge)
        else:
            self.memory.note_responses(policy, charge)
            if self.down:  # its cost reaches Redis only on replay: count it here meanwhile
                self.memory.charge_seen(self.memory.plan(policy), charge.cost_ticks)
        if self.down:
            self.redis.defer(policy, decision, charge)
            return
        try:
            await self.redis.release(policy, decision, charge)
        except STORE_ERRORS as exc:
            self._went_down(exc)

    async def usage_snapshot(self, policy: LimitPolicy) -> UsageSnapshot:
        if not self.down:
            try:
                return await self.redis.usage_snapshot(policy)
            except STORE_ERRORS as exc:
                self._went_down(exc)
        if self.failure_mode == "closed":
            raise LimiterUnavailable(self.cause)
        return self.memory.snapshot_now(policy)

    def _went_down(self, exc: BaseException) -> None:
        LIMITER_STORE_ERRORS.inc()
        if self.down:
            return
        self.down = True
        out_of_memory = isinstance(exc, OutOfMemoryError)
        self.cause = "is out of memory and refuses writes" if out_of_memory else "is unreachable"
        LIMITER_FALLBACK.set(1 if self.failure_mode == "local" else 0)
        then = (
            "counting on this replica's memory"
            if self.failure_mode == "local"
            else "refusing requests with 503"
        )
        log.warning(
            "redis unreachable at %s (%s: %s): %s", self.where, type(exc).__name__, exc, then
        )
        self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(_PROBE_SECONDS)
            try:
                await self.redis.reset_connections()
                await self.redis.ping()
                replayed = await self.redis.replay()  # before admissions read the counters
            except STORE_ERRORS:
                LIMITER_STORE_ERRORS.inc()
                continue
            self.down = False
            LIMITER_FALLBACK.set(0)
            log.warning(
                "redis reachable again: shared counting resumed, %d kept releases applied",
                replayed,
            )
            return
