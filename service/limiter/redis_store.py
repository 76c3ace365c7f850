"""Counters in Redis, shared by every replica: one script call to admit, one to release.

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

Money and ownership ride in the same two scripts. Admission refuses a key or tenant whose
spend budget (its day or month spend counter, calendar periods in UTC on Redis's clock)
is spent, and, with an owner check, an id its tenant does not own. Release charges the
token windows, adds the request to the key's ledger row, to its spend counters and to the
tenant's day and month sums (INCRBY/HINCRBY, integers), and records or forgets a response
id (`usage/ledger.py`). Lua's cost is per `redis.call`, so zero measures are not written
and expiries are set once, when a counter is created; and the calls of one process's event-
loop turn share a script call per policy (`batching`): its admissions go as one ADMIT,
decided in order as that many calls would decide them (one INCRBY per window, one ZADD for
the leases), its releases as one RELEASE_MANY, each marker checked and set, then one write
per counter and measure for all of them (in the burst benchmark ~4.5 a call each way: ~0.46
script calls per request instead of 2). The owner check's admission goes alone; releases of
requests admitted from memory, and replays, go one by one (RELEASE).

Faults (a hung Redis runs the commands queued on its connections once it resumes, however
late): every script call carries a deadline in Redis's time (`redis/clock.py`), a little before the
caller gives up, and a script that starts past it does nothing. A release Redis has not
confirmed is kept (bounded) and applied again once Redis answers. Each admission writes a
short-lived marker under its id ('a:' and the instant its windows were counted in), which
its release turns into 'r', so a release whose reply was lost is not applied twice. An
admission given up (no reply: it may have run, or may not) is kept in the same queue and
followed by a cancellation: if the marker still says 'a:', its request units come off the
windows it counted and its lease goes (marker 'c'); if absent (the script never ran, or ran
past its deadline), nothing. A given-up admission is never released (the request was
refused, or served from memory under a decision of its own), so the two cannot collide.

Admit and release go over the process's multiplexed connection when there is one (see
`redis/multiplexed.py`), else through redis-py's scripts; everything else uses redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import date
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.limiter.base import USAGE_READS_PER_SECOND, Decision, ReadsExceeded, new_id
from service.limiter.batching import TurnBatcher
from service.limiter.plan import Plan, build_plan, limit_states, tightest
from service.limiter.policy import LimitPolicy
from service.limiter.scripts import (
    ADMIT,
    CANCEL,
    MARKER_MS,
    REFRESH,
    RELEASE,
    RELEASE_MANY,
    SNAPSHOT,
)
from service.observability.metrics import LIMITER_REPLAY_DROPPED, LIMITER_REPLAY_PENDING
from service.redis.clock import RedisClock
from service.redis.multiplexed import (
    MultiplexedConnection,
    MultiplexedScript,
    RedisPyScript,
    bulk,
    bulks,
)
from service.usage.ledger import (
    MAX_RESPONSE_ID_CHARS,
    RESPONSE_SECONDS,
    LedgerRow,
    Totals,
    UsageSnapshot,
    ledger_model,
    measures_of,
    parse_ledger_fields,
    parse_ledger_name,
)
from service.usage.record import Charge

log = logging.getLogger("service.limiter")

STORE_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

# A script must start this much before the caller's timeout, so that its reply still has
# time to arrive: past the deadline it does nothing.
_DEADLINE_SHARE = 0.75
_REPLAY_LIMIT = 100_000  # releases kept while Redis is unreachable; the oldest go first
_REPLAY_BATCH = 256
_EXPIRED = -1  # a script's status when it started past its deadline
_BATCH_LIMIT = 64  # admissions in one ADMIT call, releases in one RELEASE_MANY call
_BATCH_MEASURE = 2**46  # 64 measures below it add up exactly in Lua's doubles (< 2^53)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A policy's plan and the script arguments that do not change between calls."""

    plan: Plan
    admit_keys: bytes  # ADMIT's keys before the owner's and the markers
    admit_key_count: int
    admit_args: tuple[bytes, bytes]  # ARGV[3:] before the leases: without, with the owner check
    admit_arg_count: int
    release_keys: tuple[bytes, bytes]  # the keys after the marker: without, with a lease
    release_key_count: tuple[int, int]
    release_many_args: tuple[bytes, bytes]  # RELEASE_MANY's ARGV[2:] before the releases
    release_many_arg_count: int
    token_periods: tuple[int, ...]
    snapshot_keys: list[str]
    snapshot_args: list[int | str]


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
    decision: Decision | None = None


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
        retention_days: int = 400,
    ) -> None:
        self.redis = redis
        self.multiplexed = multiplexed
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.prefix = prefix
        self.retention_ms = retention_days * 86_400_000
        self.clock = clock or RedisClock()
        self._budget = timeout * _DEADLINE_SHARE  # seconds a script may take to start
        if multiplexed is not None:
            self._admit = MultiplexedScript(multiplexed, ADMIT)
            self._release = MultiplexedScript(multiplexed, RELEASE)
            self._snapshot = MultiplexedScript(multiplexed, SNAPSHOT)
            self._cancel = MultiplexedScript(multiplexed, CANCEL)
            self._release_many = MultiplexedScript(multiplexed, RELEASE_MANY)
        else:
            self._admit = RedisPyScript(redis.register_script(ADMIT))
            self._release = RedisPyScript(redis.register_script(RELEASE))
            self._release_many = RedisPyScript(redis.register_script(RELEASE_MANY))
            self._snapshot = RedisPyScript(redis.register_script(SNAPSHOT))
            self._cancel = RedisPyScript(redis.register_script(CANCEL))
        self._refresh = redis.register_script(REFRESH)
        self._plans: dict[LimitPolicy, _Compiled] = {}
        self._leases: dict[str, str] = {}  # lease id -> concurrency set, held by this process
        self._refresher: asyncio.Task[None] | None = None
        self._pending: collections.deque[_Pending] = collections.deque(maxlen=replay_limit)
        self._overflowing = False  # logged once per outage
        # Admissions of one policy made in one loop turn: one script call.
        self._admissions: TurnBatcher[LimitPolicy, _Admission] = TurnBatcher(
            self._admit_batch, _BATCH_LIMIT
        )
        # Releases of one policy (and lease or not) ending in one loop turn: one script call.
        self._releases: TurnBatcher[tuple[LimitPolicy, bool], _Pending] = TurnBatcher(
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
            compiled = self._plans[policy] = self._compile(build_plan(policy, self.prefix))
        return compiled

    def _compile(self, plan: Plan) -> _Compiled:
        windows = plan.requests + plan.tokens
        keys = [w.key for w in windows]
        head: list[int | str] = [len(plan.requests), len(plan.tokens), 0, len(plan.spend)]
        checks: list[int | str] = []  # the arguments after ARGV[6], the owner check
        for window in windows:
            checks += [window.limit, window.seconds]
        if plan.concurrency_key is not None:
            keys.append(plan.concurrency_key)
            head[2] = 1
        snapshot_keys = list(keys)  # the windows and the lease set; the ledger's keys follow
        spend = [plan.key_spend] if plan.tenant_sums is None else [plan.key_spend, plan.tenant_sums]
        sums = [plan.key_spend, plan.key_sums]
        if plan.tenant_sums is not None:
            sums.append(plan.tenant_sums)
        if plan.spend:
            keys += spend
            for budget in plan.spend:
                checks += [1 if budget.scope == "key" else 2, budget.period[0], budget.ticks]
        if plan.concurrency_key is not None:
            checks += [plan.concurrent or 0, self.lease_ms]
        admit_args = (bulks(*head, 0, *checks), bulks(*head, 1, *checks))
        tokens = [w.key for w in plan.tokens]
        ledger = [plan.ledger, *sums, plan.responses]
        leased = [*tokens, plan.concurrency_key, *ledger] if plan.concurrency_key else []
        many_head = [MARKER_MS, len(tokens)]  # then whether leased
        many_tail = [
            0 if plan.tenant_sums is None else 1,
            plan.key_id,
            self.retention_ms,
            RESPONSE_SECONDS * 1000,
            *(w.seconds for w in plan.tokens),
        ]
        snapshot_keys += [*sums, plan.reads]
        snapshot_args: list[int | str] = [
            len(windows),
            1 if plan.concurrency_key is not None else 0,
            1 if plan.tenant_sums is not None else 0,
            USAGE_READS_PER_SECOND,
            *(w.seconds for w in windows),
        ]
        return _Compiled(
            plan,
            bulks(*keys) if keys else b"",
            len(keys),
            admit_args,
            len(head) + 1 + len(checks),
            (bulks(*tokens, *ledger), bulks(*leased) if leased else b""),
            (len(tokens) + len(ledger), len(leased)),
            (bulks(*many_head, 0, *many_tail), bulks(*many_head, 1, *many_tail)),
            len(many_head) + 1 + len(many_tail),
            tuple(w.seconds for w in plan.tokens),
            snapshot_keys,
            snapshot_args,
        )

    async def admit(self, policy: LimitPolicy, owner_check: str | None = None) -> Decision:
        compiled = self._compiled(policy)
        plan = compiled.plan
        admission = _Admission(new_id())
        try:
            if owner_check is None:
                await self._admissions.add(policy, admission)
            elif len(owner_check) > MAX_RESPONSE_ID_CHARS:  # never recorded, so never owned
                return Decision(allowed=False, reason="not_found", store="redis")
            else:
                await self._admit_batch(policy, [admission], f"{plan.responses}:{owner_check}")
        except STORE_ERRORS:
            # It may have run before its deadline, its reply lost: take it back (`_apply`).
            lease = admission.id if plan.concurrency_key is not None else None
            given_up = Decision(allowed=True, lease=lease, store="redis", id=admission.id)
            self._keep(_Pending(compiled, given_up, None, 0, 0))
            raise
        assert admission.decision is not None
        return admission.decision

    def _admit_batch(
        self, policy: LimitPolicy, batch: list[_Admission], owner: str | None = None
    ) -> Awaitable[None]:
        """Admissions of one policy in one ADMIT call, sent now; the awaitable decides them,
        in order, from its reply. `owner`: the response key an owner check looks for (its
        admission comes alone)."""
        compiled = self._compiled(policy)
        plan = compiled.plan
        markers = [_marker(plan, admission.id) for admission in batch]
        if owner is not None:
            markers.insert(0, owner)  # the key before the markers
        key_count = compiled.admit_key_count + len(markers)
        keys = bulks(key_count) + compiled.admit_keys + bulks(*markers)
        args = bulk(b"%d" % len(batch)) + compiled.admit_args[owner is not None]
        count = 1 + key_count + 1 + compiled.admit_arg_count
        leased = plan.concurrency_key is not None
        if leased:
            args += bulks(*(admission.id for admission in batch))  # lease id = admission id
            count += len(batch)
        return self._decide(plan, batch, self._call(self._admit, count, keys, args))

    async def _decide(self, plan: Plan, batch: list[_Admission], reply: Awaitable[list]) -> None:
        """Each admission's decision from the batch's ADMIT reply."""
        result = await reply
        leased = plan.concurrency_key is not None
        _, admitted, reason, retry_ms, spent = result[:5]
        if isinstance(reason, bytes):
            reason = reason.decode()
        if reason == "not_found":
            batch[0].decision = Decision(allowed=False, reason="not_found", store="redis")
            return
        windows = result[5:]  # each window's units before these admissions, ms to its reset
        states = [
            (window, windows[2 * i], windows[2 * i + 1] / 1000)
            for i, window in enumerate(plan.requests + plan.tokens)
        ]
        requests, tokens = states[: len(plan.requests)], states[len(plan.requests) :]
        token_state = tightest(tokens, 0)
        now = time.monotonic()
        if admitted < len(batch):  # the refused ones, each as the first of them was refused
            budget = plan.spend[spent - 1] if spent else None
            spend_limit = f"{budget.scope} budget ${budget.text}" if budget else None
            retry_after = max(1, math.ceil(retry_ms / 1000))
            request_state = tightest(requests, admitted)  # the admitted ones' units
            for admission in batch[admitted:]:
                admission.decision = Decision(
                    allowed=False,
                    reason=reason,
                    retry_after=retry_after,
                    requests=request_state,
                    tokens=token_state,
                    spend_limit=spend_limit,
                    store="redis",
                )
        for index, admission in enumerate(batch[:admitted]):
            lease = admission.id if leased else None
            if lease is not None:
                self._leases[lease] = plan.concurrency_key  # type: ignore[assignment]
            admission.decision = Decision(
                allowed=True,
                requests=tightest(requests, index + 1),  # its unit and those before it
                tokens=token_state,
                lease=lease,
                store="redis",
                id=admission.id,
                admitted_at=now,
            )

    async def release(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        """Free the slot, charge tokens, the ledger and the sums, record or forget a response
        id (and, for a request admitted from memory, count its request unit). Unconfirmed,
        the release is kept for `replay` and the error raised."""
        pending = self._pending_of(policy, decision, charge)
        try:
            if decision.store == "redis" and _adds_up(charge):
                await self._releases.add((policy, decision.lease is not None), pending)
            else:
                await self._apply(pending, replay=False)
        except STORE_ERRORS:
            self._keep(pending)
            raise

    def defer(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        """Keep a release for `replay`, without trying Redis now (it is known down)."""
        self._keep(self._pending_of(policy, decision, charge))

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

    async def usage_snapshot(self, policy: LimitPolicy) -> UsageSnapshot:
        compiled = self._compiled(policy)
        plan = compiled.plan
        reply = await self._snapshot(compiled.snapshot_keys, compiled.snapshot_args)
        if reply[1] == 0:
            raise ReadsExceeded(reply[2] / 1000)
        now, _, day_end, month_end, used, live, spent_day, spent_month, *sums = reply
        key_today, key_month, tenant_day, tenant_month = (measures_of(raw) for raw in sums)
        windows = []
        for window, units in zip(plan.requests + plan.tokens, used, strict=True):
            reset_ms = (now // (window.seconds * 1000) + 1) * window.seconds * 1000 - now
            windows.append((int(units), reset_ms / 1000))
        budgets = []
        for budget in plan.spend:
            day = budget.period == "day"
            if budget.scope == "key":
                spent = spent_day if day else spent_month
            else:
                spent = (tenant_day if day else tenant_month).cost_ticks
            budgets.append((spent, ((day_end if day else month_end) - now) / 1000))
        limits = limit_states(plan, windows, budgets, live)
        tenant = plan.tenant_sums is not None
        return UsageSnapshot(
            limits=limits,
            key_today=key_today,
            key_month=key_month,
            tenant_today=tenant_day if tenant else None,
            tenant_month=tenant_month if tenant else None,
        )

    async def ledger_rows(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> list[LedgerRow]:
        """Scans for the ledger's day hashes (rare, operator reads), then reads them."""
        owner = "*" if tenant is None else ("k:*" if tenant == "-" else f"t:{tenant}")
        pattern = f"{self.prefix}:{{{owner}}}:led:*:{key or '*'}"
        names = []
        async for raw in self.redis.scan_iter(match=pattern, count=1000):
            name = raw.decode() if isinstance(raw, bytes) else raw
            where = parse_ledger_name(self.prefix, name)
            if (
                where is not None
                and first <= where[0] <= last
                and (tenant is None or where[1] == tenant)
                and (key is None or where[2] == key)
            ):
                names.append((name, where))
        rows = []
        for chunk in range(0, len(names), 500):
            batch = names[chunk : chunk + 500]
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, _ in batch:
                    pipe.hgetall(name)
                hashes = await pipe.execute()
            for (_, (day, row_tenant, row_key)), raw in zip(batch, hashes, strict=True):
                for model, totals in parse_ledger_fields(raw).items():
                    rows.append(LedgerRow(day, row_tenant, row_key, model, totals))
        rows.sort(key=lambda r: (r.day, r.tenant, r.key, r.model))
        return rows

    def _pending_of(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> _Pending:
        compiled = self._compiled(policy)
        if decision.store == "redis" and decision.lease is not None:
            # Whatever becomes of this release, the refresher must stop renewing the lease.
            self._leases.pop(decision.lease, None)
        if not decision.id:
            decision.id = new_id()
        ended = self.clock.redis_ms(self.clock.local_ms())
        age_ms = int((time.monotonic() - decision.admitted_at) * 1000)
        return _Pending(compiled, decision, charge, ended, ended - age_ms)

    async def _apply(self, pending: _Pending, replay: bool) -> None:
        compiled, decision, charge = pending.compiled, pending.decision, pending.charge
        plan = compiled.plan
        if charge is None:  # a given-up admission: take it back, if the script ran after all
            keys = [_marker(plan, decision.id), *(w.key for w in plan.requests)]
            if decision.lease is not None:
                keys.append(plan.concurrency_key)  # type: ignore[arg-type]
            cancel = [MARKER_MS, len(plan.requests), *(w.seconds for w in plan.requests)]
            cancel.append(decision.lease or "")
            packed = bulks(len(keys), *keys)
            await self._call(self._cancel, 1 + len(keys) + len(cancel), packed, bulks(*cancel))
            return
        units = plan.requests if decision.store == "memory" else ()
        lease = decision.lease if decision.store == "redis" else None
        leased = lease is not None
        key_count = 1 + len(units) + compiled.release_key_count[leased]
        keys = bulks(key_count, _marker(plan, decision.id), *(w.key for w in units))
        keys += compiled.release_keys[leased]
        args = (
            pending.ended_ms if replay else 0,
            pending.admitted_ms,
            MARKER_MS,
            len(units),
            len(compiled.token_periods),
            1 if leased else 0,
            0 if plan.tenant_sums is None else 1,
            *(w.seconds for w in units),
            *compiled.token_periods,
            lease or "",
            plan.key_id,
            *_charge_args(charge),
            self.retention_ms,
            _recordable(charge),
            charge.forget_response or "",
            RESPONSE_SECONDS * 1000,
        )
        await self._call(self._release, 1 + key_count + len(args), keys, bulks(*args))

    async def _release_batch(self, key: tuple[LimitPolicy, bool], batch: list[_Pending]) -> None:
        """Releases of one policy admitted in Redis, in one RELEASE_MANY call."""
        compiled = batch[0].compiled
        plan, leased = compiled.plan, key[1]
        markers = []
        args: list[int | str] = []
        for pending in batch:
            decision, charge = pending.decision, pending.charge
            assert charge is not None  # given-up admissions are never released
            markers.append(_marker(plan, decision.id))
            args += [
                decision.lease or "",
                *_charge_args(charge),
                _recordable(charge),
                charge.forget_response or "",
            ]
        fixed = compiled.release_key_count[leased]
        keys = bulks(fixed + len(markers)) + compiled.release_keys[leased] + bulks(*markers)
        head = compiled.release_many_args[leased]
        count = 1 + fixed + len(markers) + compiled.release_many_arg_count + len(args)
        await self._call(self._release_many, count, keys, head + bulks(*args))

    def _call(self, script: Any, count: int, keys: bytes, args: bytes) -> Awaitable[list[Any]]:
        """Run a script with a deadline (ARGV[1]) a little before this caller gives up; on
        the multiplexed connection it is written now, and the awaitable gives its reply.

        `keys`: its key count and KEYS, `args`: ARGV[2:], packed in RESP (`count` bulk
        strings in all, the deadline aside).

        A reply saying it started past the deadline comes from a Redis that answers but
        whose clock this process misjudged (or a wait for a pooled connection): the reply
        corrected the clock, so it is tried once more before counting as a timeout.
        """
        return self._replied(script, count, keys, args, *self._send(script, count, keys, args))

    def _send(self, script: Any, count: int, keys: bytes, args: bytes) -> tuple[Awaitable, int]:
        """Send a script call with its deadline: (its reply, when it was sent)."""
        sent = self.clock.local_ms()
        deadline = bulk(b"%d" % self.clock.deadline_ms(self._budget))
        return script.send_packed(count + 1, keys + deadline + args), sent

    async def _replied(
        self, script: Any, count: int, keys: bytes, args: bytes, reply: Awaitable, sent: int
    ) -> list[Any]:
        for retried in (False, True):
            result = await reply
            self.clock.observe(sent, self.clock.local_ms(), int(result[0]))
            if result[1] != _EXPIRED:
                return result
            if not retried:
                reply, sent = self._send(script, count, keys, args)
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


def _charge_args(charge: Charge) -> list[int | str]:
    """A release's model, tokens for the token windows and six measures (both scripts)."""
    measures = Totals.of(charge).values()
    return [ledger_model(charge.model), max(0, charge.usage.total_tokens), *measures]


def _adds_up(charge: Charge) -> bool:
    """Whether RELEASE_MANY can add this charge exactly (any real request's can)."""
    return max(charge.usage.total_tokens, *Totals.of(charge).values()) < _BATCH_MEASURE


def _recordable(charge: Charge) -> str:
    """The response id a release records ('' for none: longer ids are never owned)."""
    record = charge.record_response
    if record is not None and len(record) > MAX_RESPONSE_ID_CHARS:
        log.warning("response id of %d characters not recorded", len(record))
        return ""
    return record or ""


def _marker(plan: Plan, admission: str) -> str:
    """The key an admission's release and cancellation share (written by ADMIT)."""
    return f"{plan.base}:rel:{admission}"
