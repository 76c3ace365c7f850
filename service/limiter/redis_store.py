"""Counters in Redis, shared by every replica: one script call to admit, one to release.

Fixed windows aligned on the clock, with `now` taken from Redis `TIME` inside the scripts so
every replica agrees on the windows whatever its own clock says. A fixed window never
refuses below, nor admits above, the stated rate within one window, which is the contract (a
sliding-window counter approximates both ways; a sliding log costs an entry per unit, wrong
for token budgets). admit.lua checks every window, budget and the concurrency leases and
consumes only if all pass, so a refused request spends nothing and admissions on any number
of replicas cannot over-admit: Redis runs each script atomically.

Concurrency slots are leases in a sorted set (member = lease id, score = expiry), purged at
admission, so a replica that died frees its slots within the lease time; live ones are
refreshed by one pipelined round trip per process every lease/3.

Each script is called with the policy as a record (built once per policy) and the call's
records (the admissions, or the releases), as JSON; the Lua is in `lua/`. The calls of one
event-loop turn share a script call per policy (`batching`): its admissions go as one
admit.lua, decided as that many calls in a row would decide them, its releases as one
release.lua, which charges them with one write per counter and measure. Releases of
requests admitted from memory and replays take the same path.

Faults (a hung Redis runs the commands queued on its connections once it resumes, however
late): every call carries a deadline in Redis's time (`redis/clock.py`), a little before the
caller gives up, and a script that starts past it does nothing. A release Redis has not
confirmed is kept (bounded) and applied again once Redis answers. Each admission writes a
short-lived marker under its id ('a:' and the instant its windows were counted in), which its
release turns into 'r', so a release whose reply was lost is not applied twice. An admission
given up (no reply: it may have run, or may not) is kept in the same queue and followed by a
cancellation (cancel.lua): if the marker still says 'a:', its units come off the windows it
counted and its lease goes. A given-up admission is never released (the request was refused,
or served from memory under a decision of its own), so the two cannot collide.

Admit, release and cancel go over the process's multiplexed connection when there is one
(`redis/multiplexed.py`; a Cluster's, routed by the tenant's slot: `redis/cluster.py`), else
through redis-py's scripts; the rest uses redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.limiter.base import (
    MAX_RESPONSE_ID_CHARS,
    RESPONSE_SECONDS,
    USAGE_READS_PER_SECOND,
    Decision,
    ReadsExceeded,
    UsageSnapshot,
    new_id,
)
from service.limiter.batching import TurnBatcher
from service.limiter.decide import Standing, decide, limit_states
from service.limiter.plan import PLANS_CACHED, Plan, build_plan
from service.limiter.policy import LimitPolicy
from service.limiter.scripts import ADMIT, CANCEL, MARKER_MS, REFRESH, RELEASE, SNAPSHOT
from service.observability.metrics import LIMITER_REPLAY_DROPPED, LIMITER_REPLAY_PENDING
from service.redis.clock import RedisClock
from service.redis.multiplexed import MultiplexedScript, RedisPyScript, Shared, bulk
from service.usage.ledger import MODELS_PER_DAY, NO_MODEL, OTHER_MODEL, ledger_model
from service.usage.record import MEASURE_CAP, Charge, Totals

log = logging.getLogger("service.limiter")

# (the policy's plan, ticks spent per spend budget, Redis's time in ms) -> None
SpendSeen = Callable[[Plan, Sequence[int], int], None]

STORE_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
# Error replies that say the server cannot write now (out of memory, a demoted master, a
# Cluster between masters): the releases they refused are kept for the next replay.
PASSING_REFUSALS = (OutOfMemoryError, ReadOnlyError, ClusterDownError, TryAgainError)

# A script must start this much before the caller's timeout, so that its reply still has
# time to arrive: past the deadline it does nothing.
_DEADLINE_SHARE = 0.75
_REPLAY_LIMIT = 100_000  # releases kept while Redis is unreachable; the oldest go first
_BATCH_LIMIT = 64  # admissions in one admit call, releases in one release call
_EXPIRED = -1  # a script's status when it started past its deadline
_NOT_OWNED = -2  # admit.lua's, when the owner check failed
_HOLDS_KEPT_MS = 86_400_000  # a holds set outlives its last renewal by a day (standing.lua)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A policy's plan, and the head of every script call for it (packed once)."""

    plan: Plan
    head: bytes  # the key count, the one key (the tenant's hash tag) as RESP bulk strings
    key: bytes  # that key: a Cluster routes the call by its slot
    record: bytes  # the policy as a record, a RESP bulk string


@dataclass(slots=True)
class _Pending:
    """A release Redis has not confirmed: applied when Redis answers again."""

    compiled: _Compiled
    decision: Decision
    charge: Charge | None  # None: an admission given up, to take back if it ran
    ended_ms: int  # Redis's time when the request ended (estimated)
    admitted_ms: int  # Redis's time when it was admitted (estimated)


@dataclass(slots=True)
class _Admission:
    """An admission waiting for its batch's reply, which sets its decision."""

    id: str  # its marker's name and, with a concurrency cap, its lease id
    hold: int = 0  # ticks of estimated cost to hold against spend budgets
    decision: Decision | None = None


class RedisLimiter:
    """Admissions against Redis. Raises redis/OS errors; the failover wrapper decides."""

    def __init__(
        self,
        redis: Redis,
        lease_seconds: float = 30.0,
        prefix: str = "gw",
        multiplexed: Shared | None = None,
        timeout: float = 1.0,
        clock: RedisClock | None = None,
        replay_limit: int = _REPLAY_LIMIT,
        retention_days: int = 400,
        spend_seen: SpendSeen | None = None,
    ) -> None:
        self.redis = redis
        # Told the spend Redis reports at each admission and release (the failover's memory
        # keeps it, so a spent budget stays spent through an outage).
        self.spend_seen = spend_seen
        self.multiplexed = multiplexed
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.prefix = prefix
        self.retention_ms = retention_days * 86_400_000
        self.clock = clock or RedisClock()
        self._budget = timeout * _DEADLINE_SHARE  # seconds a script may take to start

        def script(text: str) -> MultiplexedScript | RedisPyScript:
            if multiplexed is not None:
                return MultiplexedScript(multiplexed, text)
            return RedisPyScript(redis.register_script(text))

        self._admit, self._release = script(ADMIT), script(RELEASE)
        self._cancel, self._snapshot = script(CANCEL), script(SNAPSHOT)
        # Lease renewals: on the shared connection when there is one (redis-py's scripts in
        # a Cluster's pipeline are never loaded, so they would fail there with NOSCRIPT).
        self._refresh = script(REFRESH)
        self._plans: dict[LimitPolicy, _Compiled] = {}
        # What this process renews every lease/3: lease id -> concurrency set, and admission
        # id -> the holds' due set (sets kept `keep_ms` after the last renewal).
        self._leases: dict[str, str] = {}
        self._holds: dict[str, str] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._pending: collections.deque[_Pending] = collections.deque(maxlen=replay_limit)
        self._overflowing = False  # logged once per outage
        # The admissions, and the releases, of one policy in one loop turn: one script call.
        self._admissions: TurnBatcher[LimitPolicy, _Admission] = TurnBatcher(
            self._admit_batch, _BATCH_LIMIT
        )
        self._releases: TurnBatcher[LimitPolicy, _Pending] = TurnBatcher(
            self._release_batch, _BATCH_LIMIT
        )

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
            if len(self._plans) >= PLANS_CACHED:
                self._plans.clear()
            plan = build_plan(policy, self.prefix)
            key = plan.names.tag.encode()
            head = bulk(b"1") + bulk(key)
            compiled = self._plans[policy] = _Compiled(plan, head, key, bulk(self._record(plan)))
        return compiled

    def _record(self, plan: Plan) -> bytes:
        """The policy as the scripts read it (see the top of each script in `lua/`)."""
        names = plan.names
        record: dict[str, Any] = {
            "requests": [
                {"key": w.key, "limit": w.limit, "seconds": w.seconds} for w in plan.requests
            ],
            "tokens": [{"key": w.key, "limit": w.limit, "seconds": w.seconds} for w in plan.tokens],
            "spend": [
                {"key": b.key, "period": b.period, "ticks": b.ticks}
                | ({"field": "$"} if b.scope == "tenant" else {})
                for b in plan.spend
            ],
            "key_id": plan.key_id,
            "markers": names.markers,
            "ledger": names.ledger,
            "key_spend": names.key_spend,
            "sums": [s for s in (names.key_sums, names.tenant_sums) if s is not None],
            "models": names.models,
            "models_per_day": MODELS_PER_DAY,
            "no_model": NO_MODEL,
            "other_model": OTHER_MODEL,
            "responses": names.responses,
            "reads": names.reads,
            "reads_per_second": USAGE_READS_PER_SECOND,
            "retention_ms": self.retention_ms,
            "marker_ms": MARKER_MS,
            "response_ms": RESPONSE_SECONDS * 1000,
        }
        if plan.spend:
            record["holds"] = {
                "amounts": names.holds,
                "due": names.holds_due,
                "held": names.held,
                "tenant": plan.tenant is not None,
                "lease_ms": self.lease_ms,
            }
        if plan.concurrent is not None:
            record["concurrency"] = {
                "key": names.leases,
                "cap": plan.concurrent,
                "lease_ms": self.lease_ms,
            }
        return orjson.dumps(record)

    async def admit(
        self, policy: LimitPolicy, owned: Sequence[str] = (), hold: int = 0
    ) -> Decision:
        compiled = self._compiled(policy)
        admission = _Admission(new_id(), min(max(0, hold), MEASURE_CAP))
        try:
            if not owned:
                await self._admissions.add(policy, admission)
            else:
                for object_id in owned:
                    if len(object_id) > MAX_RESPONSE_ID_CHARS:  # never recorded: never owned
                        return Decision(False, "not_found", store="redis", missing=object_id)
                await self._admit_batch(policy, [admission], owned)
        except STORE_ERRORS:
            # It may have run before its deadline, its reply lost: take it back (cancel.lua).
            lease = admission.id if compiled.plan.concurrent is not None else None
            given_up = Decision(
                allowed=True, lease=lease, store="redis", id=admission.id, held=admission.hold
            )
            self._keep(_Pending(compiled, given_up, None, 0, 0))
            raise
        assert admission.decision is not None
        return admission.decision

    def _admit_batch(
        self, policy: LimitPolicy, batch: list[_Admission], owned: Sequence[str] = ()
    ) -> Awaitable[None]:
        """Admissions of one policy in one admit.lua call, sent now; the awaitable decides
        them from its reply. `owned`: ids the tenant must own (such an admission is alone)."""
        compiled = self._compiled(policy)
        record: dict[str, Any] = {"admissions": [{"id": a.id, "hold": a.hold} for a in batch]}
        if owned:
            record["owned"] = [compiled.plan.names.responses + object_id for object_id in owned]
        reply = self._call(self._admit, compiled, orjson.dumps(record))
        return self._decided(compiled.plan, batch, reply, owned)

    async def _decided(
        self, plan: Plan, batch: list[_Admission], reply: Awaitable[list], owned: Sequence[str]
    ) -> None:
        result = await reply
        if result[1] == _NOT_OWNED:
            missing = owned[result[2] - 1]
            batch[0].decision = Decision(False, "not_found", store="redis", missing=missing)
            return
        now_ms, admitted, live, requests, tokens, spent, (held_key, held_tenant), *rest = result
        if self.spend_seen is not None and spent:
            self.spend_seen(plan, spent, now_ms)
        standing = Standing(now_ms, requests, tokens, spent, live, held_key, held_tenant)
        ids, holds = [a.id for a in batch], [a.hold for a in batch]
        decisions = decide(plan, standing, ids, holds, admitted, "redis", time.monotonic())
        if owned and rest and rest[0]:  # the upstream that holds the first object named
            pinned = rest[0]
            decisions[0].upstream = pinned.decode() if isinstance(pinned, bytes) else str(pinned)
        for admission, decision in zip(batch, decisions, strict=True):
            if decision.lease is not None:
                self._leases[decision.lease] = plan.names.leases
            if decision.held:
                self._holds[decision.id] = plan.names.holds_due
            admission.decision = decision

    async def release(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        """Free the slot, charge tokens, the ledger and the sums, record or forget a response
        id (and, for a request admitted from memory, count its request unit). Unconfirmed,
        the release is kept for `replay` and the error raised."""
        pending = self._pending_of(policy, decision, charge)
        try:
            await self._releases.add(policy, pending)
        except STORE_ERRORS:
            self._keep(pending)
            raise

    def defer(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        """Keep a release for `replay`, without trying Redis now (it is known down)."""
        self._keep(self._pending_of(policy, decision, charge))

    async def replay(self) -> int:
        """Apply every kept release and cancellation; how many were applied.

        Raises the store error that stopped it: what was not applied stays kept.
        """
        applied = 0
        while self._pending:
            kept = list(self._pending)
            self._pending.clear()
            batches: dict[int, list[_Pending]] = {}
            for pending in kept:
                key = id(pending.compiled) if pending.charge is not None else id(pending)
                batches.setdefault(key, []).append(pending)
            calls = [
                batch[i : i + _BATCH_LIMIT]
                for batch in batches.values()
                for i in range(0, len(batch), _BATCH_LIMIT)
            ]
            results = await asyncio.gather(
                *(self._apply(call) for call in calls), return_exceptions=True
            )
            failure: BaseException | None = None
            for call, result in zip(calls, results, strict=True):
                if isinstance(result, ResponseError) and not isinstance(result, PASSING_REFUSALS):
                    # would fail forever: say so, go on
                    log.error("dropped %d releases Redis refuses to run: %s", len(call), result)
                elif isinstance(result, BaseException):
                    for pending in call:
                        self._keep(pending)
                    failure = result
                else:
                    applied += len(call)
            LIMITER_REPLAY_PENDING.set(len(self._pending))
            if failure is not None:
                raise failure
        self._overflowing = False
        return applied

    async def _apply(self, batch: list[_Pending]) -> None:
        """Replay kept releases of one policy, or take back one given-up admission."""
        compiled, first = batch[0].compiled, batch[0]
        if first.charge is None:
            admission = {"id": first.decision.id}
            if first.decision.lease is not None:
                admission["lease"] = first.decision.lease
            await self._call(self._cancel, compiled, orjson.dumps(admission))
            return
        records = [_release_record(pending, replay=True) for pending in batch]
        await self._call(self._release, compiled, orjson.dumps(records))

    def _release_batch(self, policy: LimitPolicy, batch: list[_Pending]) -> Awaitable[None]:
        """Releases of one policy that ended in one loop turn, in one release.lua call."""
        records = [_release_record(pending, replay=False) for pending in batch]
        compiled = batch[0].compiled
        return self._released(compiled, self._call(self._release, compiled, orjson.dumps(records)))

    async def _released(self, compiled: _Compiled, reply: Awaitable[list[Any]]) -> None:
        now_ms, _, spent = await reply
        if self.spend_seen is not None and spent:
            self.spend_seen(compiled.plan, spent, now_ms)

    async def usage_snapshot(self, policy: LimitPolicy) -> UsageSnapshot:
        compiled = self._compiled(policy)
        body = compiled.head + bulk(b"0") + compiled.record
        reply = await self._snapshot.send_packed(4, body, compiled.key)
        if reply[1] == 0:
            raise ReadsExceeded(reply[2] / 1000)
        now_ms, _, live, requests, tokens, spent, *sums = reply
        key_day, key_month, tenant_day, tenant_month = (Totals.from_codes(raw) for raw in sums)
        standing = Standing(now_ms, requests, tokens, spent, live)
        tenant = compiled.plan.tenant is not None
        return UsageSnapshot(
            limits=limit_states(compiled.plan, standing),
            key_today=key_day,
            key_month=key_month,
            tenant_today=tenant_day if tenant else None,
            tenant_month=tenant_month if tenant else None,
        )

    def _pending_of(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> _Pending:
        compiled = self._compiled(policy)
        if decision.store == "redis":
            # Whatever becomes of this release, the refresher must stop renewing the lease.
            if decision.lease is not None:
                self._leases.pop(decision.lease, None)
            self._holds.pop(decision.id, None)
        if not decision.id:
            decision.id = new_id()
        ended = self.clock.redis_ms(self.clock.local_ms())
        age_ms = int((time.monotonic() - decision.admitted_at) * 1000)
        return _Pending(compiled, decision, charge, ended, ended - age_ms)

    def _call(self, script: Any, compiled: _Compiled, record: bytes) -> Awaitable[list[Any]]:
        """Call `script` for a policy with the call's record, under a deadline a little
        before this caller gives up; on the multiplexed connection it is written now, and
        the awaitable gives its reply.

        A reply saying it started past the deadline comes from a Redis that answers but
        whose clock this process misjudged (or a wait for a pooled connection): the reply
        corrected the clock, so it is tried once more before counting as a timeout.
        """
        return self._replied(script, compiled, record, *self._send(script, compiled, record))

    def _send(self, script: Any, compiled: _Compiled, record: bytes) -> tuple[Awaitable, int]:
        """Send a call with its deadline: (its reply, when it was sent)."""
        sent = self.clock.local_ms()
        deadline = b"%d" % self.clock.deadline_ms(self._budget)
        body = compiled.head + bulk(deadline) + compiled.record + bulk(record)
        return script.send_packed(5, body, compiled.key), sent

    async def _replied(
        self, script: Any, compiled: _Compiled, record: bytes, reply: Awaitable, sent: int
    ) -> list[Any]:
        for retried in (False, True):
            result = await reply
            self.clock.observe(sent, self.clock.local_ms(), int(result[0]))
            if result[1] != _EXPIRED:
                return result
            if not retried:
                reply, sent = self._send(script, compiled, record)
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
            by_set: dict[tuple[str, int], list[str]] = {}
            for lease, zset in list(self._leases.items()):
                by_set.setdefault((zset, self.lease_ms * 2), []).append(lease)
            for admission, zset in list(self._holds.items()):
                by_set.setdefault((zset, _HOLDS_KEPT_MS), []).append(admission)
            if not by_set:
                continue
            try:
                await self._renew(by_set)
            except Exception as exc:  # the leases expire by themselves if this keeps failing
                log.warning("could not refresh concurrency leases of %d keys: %s", len(by_set), exc)

    async def _renew(self, by_set: dict[tuple[str, int], list[str]]) -> None:
        """One round trip for all of this process's leases and holds, a call per set: written
        together on the shared connection (one per master on a Cluster), else pipelined."""
        calls = [
            ([zset], [self.lease_ms, keep_ms, *ids]) for (zset, keep_ms), ids in by_set.items()
        ]
        if isinstance(self._refresh, MultiplexedScript):
            await asyncio.gather(*(self._refresh(keys, args) for keys, args in calls))
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._refresh.script(keys=keys, args=args, client=pipe)
            await pipe.execute()


def _release_record(pending: _Pending, replay: bool) -> dict[str, Any]:
    """One release as release.lua reads it: the one packing function of a charge."""
    decision, charge = pending.decision, pending.charge
    assert charge is not None  # given-up admissions are cancelled, never released
    measures = {code: v for code, v in Totals.of(charge).by_code().items() if v or code == "r"}
    record: dict[str, Any] = {
        "id": decision.id,
        "model": ledger_model(charge.model),
        "tokens": min(max(0, charge.usage.total_tokens), MEASURE_CAP),
        "m": measures,
    }
    if decision.store == "redis" and decision.lease is not None:
        record["lease"] = decision.lease
    if decision.store == "redis" and decision.held:
        record["held"] = True
    if decision.store == "memory":  # its request units were never counted in Redis
        record["admitted_ms"] = pending.admitted_ms
    if replay:
        record["ended_ms"] = pending.ended_ms
    if charge.forget_response is not None:
        record["forget"] = charge.forget_response
    recordable = [i for i in charge.record if len(i) <= MAX_RESPONSE_ID_CHARS]
    if len(recordable) < len(charge.record):
        log.warning("%d stored object ids too long to record", len(charge.record) - len(recordable))
    if recordable:
        record["record"] = recordable
        if charge.upstream is not None:
            record["upstream"] = charge.upstream
    return record
