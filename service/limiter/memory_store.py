"""In-process counters: the limiter without Redis (one replica), and the `local` fallback.

One event loop runs every admission to its end without awaiting, so check-all-then-consume
is atomic here without locks. Same fixed windows, spend periods (calendar UTC day and
month), decisions (`decide.py`) and response ownership as the Redis store, on the clock it
is given (the process's by default). Released requests go to its `MemoryLedger`; ownership
keeps at most OWNED_RESPONSES ids.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from service.limiter.base import (
    MAX_RESPONSE_ID_CHARS,
    RESPONSE_SECONDS,
    USAGE_READS_PER_SECOND,
    Decision,
    ReadsExceeded,
    UsageSnapshot,
    new_id,
)
from service.limiter.decide import Standing, admissible, decide, limit_states
from service.limiter.plan import PLANS_CACHED, Plan, WindowPlan, build_plan
from service.limiter.policy import LimitPolicy
from service.redis.keys import owner_of
from service.usage.ledger import MemoryLedger, ledger_model
from service.usage.record import Charge, Totals

_SWEEP_SECONDS = 60.0
OWNED_RESPONSES = 100_000  # ids remembered; the oldest are forgotten first


class MemoryLimiter:
    def __init__(
        self,
        lease_seconds: float = 30.0,
        prefix: str = "gw",
        ledger: MemoryLedger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.prefix = prefix
        self.ledger = ledger or MemoryLedger()
        self.clock = clock  # seconds since the epoch
        self._counters: dict[str, tuple[int, int, float]] = {}  # key -> (window, used, expiry)
        self._leases: dict[str, dict[str, float]] = {}  # concurrency key -> lease id -> expiry
        self._lease_due: dict[str, float] = {}  # concurrency key -> its earliest lease expiry
        self._sums: dict[tuple[str, str], Totals] = {}  # (sums base, day or month) -> totals
        # (sums base, day or month) -> ticks Redis last reported, plus what was charged here
        # since: what a spend budget reads while Redis is unreachable (`saw_spend`).
        self._seen: dict[tuple[str, str], int] = {}
        # Spend held by requests in flight: admission id -> (ticks, the key's and tenant's
        # sums bases), and what each base holds in all.
        self._holds: dict[str, tuple[int, tuple[str, str | None]]] = {}
        self._held: dict[str, int] = {}
        # object id -> (owner, expiry, the upstream that holds it)
        self._owners: collections.OrderedDict[str, tuple[str, float, str | None]] = (
            collections.OrderedDict()
        )
        self._plans: dict[LimitPolicy, Plan] = {}
        self._next_sweep = 0.0

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def ready(self) -> tuple[bool, str]:
        return True, "memory: counted in this process, single replica only"

    async def admit(
        self, policy: LimitPolicy, owned: Sequence[str] = (), hold: int = 0
    ) -> Decision:
        return self.admit_now(policy, owned, hold)

    async def release(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        self.release_now(policy, decision, charge)

    async def usage_snapshot(self, policy: LimitPolicy) -> UsageSnapshot:
        return self.snapshot_now(policy)

    def plan(self, policy: LimitPolicy) -> Plan:
        plan = self._plans.get(policy)
        if plan is None:
            if len(self._plans) >= PLANS_CACHED:
                self._plans.clear()
            plan = self._plans[policy] = build_plan(policy, self.prefix)
        return plan

    def admit_now(self, policy: LimitPolicy, owned: Sequence[str] = (), hold: int = 0) -> Decision:
        """Check ownership, every window, spend (holding `hold` ticks) and the concurrency
        cap; consume if all pass."""
        plan = self.plan(policy)
        now = self.clock()
        self._sweep(now)
        for object_id in owned:
            if not self.owns(policy, object_id, now):
                return Decision(False, "not_found", store="memory", missing=object_id)
        standing = self._standing(plan, now)
        admission = new_id()
        admitted = admissible(plan, standing, [hold])
        if admitted:
            if plan.spend and hold > 0:
                bases = (plan.names.key_sums, plan.names.tenant_sums)
                self._holds[admission] = (hold, bases)
                for base in bases:
                    if base is not None:
                        self._held[base] = self._held.get(base, 0) + hold
            for window in plan.requests:
                used = self._used(window, now)
                self._counters[window.key] = (_index(window, now), used + 1, _end(window, now))
            if plan.concurrent is not None:
                key = plan.names.leases
                self._leases.setdefault(key, {})[admission] = expiry = now + self.lease_seconds
                self._lease_due[key] = min(self._lease_due.get(key, math.inf), expiry)
        [decision] = decide(
            plan, standing, [admission], [hold], admitted, "memory", time.monotonic()
        )
        if owned:
            decision.upstream = self._owners[owned[0]][2]
        return decision

    def release_now(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        plan = self.plan(policy)
        now = self.clock()
        tokens = charge.usage.total_tokens
        if tokens > 0:
            for window in plan.tokens:
                used = self._used(window, now)
                self._counters[window.key] = (_index(window, now), used + tokens, _end(window, now))
        if decision.lease is not None:
            self._leases.get(plan.names.leases, {}).pop(decision.lease, None)
        self._drop_hold(decision.id)
        totals = Totals.of(charge)
        self.charge_seen(plan, charge.cost_ticks, now)
        day = _utc(now).date()
        owner = owner_of(plan.key_id, plan.tenant)
        self.ledger.add(day, owner, plan.tenant, plan.key_id, ledger_model(charge.model), totals)
        day_name = day.isoformat()
        for base in (plan.names.key_sums, plan.names.tenant_sums):
            if base is not None:
                for period in (day_name, day_name[:7]):
                    self._sums[base, period] = self._sums.get((base, period), Totals()) + totals
        self.note_responses(policy, charge)

    def _drop_hold(self, admission: str) -> None:
        entry = self._holds.pop(admission, None)
        if entry is not None:
            amount, bases = entry
            for base in bases:
                if base is not None:
                    self._held[base] -= amount

    def saw_spend(self, plan: Plan, spent: Sequence[int], now_ms: int) -> None:
        """What Redis reported spent against each of the plan's budgets at `now_ms`."""
        day = _utc(now_ms / 1000).date().isoformat()
        for budget, ticks in zip(plan.spend, spent, strict=True):
            base = plan.names.key_sums if budget.scope == "key" else plan.names.tenant_sums
            self._seen[base, day if budget.period == "day" else day[:7]] = ticks  # type: ignore[index]

    def charge_seen(self, plan: Plan, cost_ticks: int, now: float | None = None) -> None:
        """Add a cost charged while Redis is unreachable to the spend last seen."""
        if cost_ticks <= 0 or not self._seen:
            return
        day = _utc(self.clock() if now is None else now).date().isoformat()
        for base in (plan.names.key_sums, plan.names.tenant_sums):
            for period in (day, day[:7]):
                if (base, period) in self._seen:
                    self._seen[base, period] += cost_ticks  # type: ignore[index]

    def note_responses(self, policy: LimitPolicy, charge: Charge) -> None:
        """Record and forget response ids as `charge` says (ownership, no counting)."""
        if charge.forget_response is not None:
            self._owners.pop(charge.forget_response, None)
        owner = owner_of(policy.key_id, policy.tenant)
        for record in charge.record:
            if len(record) <= MAX_RESPONSE_ID_CHARS:
                self._owners[record] = (owner, self.clock() + RESPONSE_SECONDS, charge.upstream)
                self._owners.move_to_end(record)
        while len(self._owners) > OWNED_RESPONSES:
            self._owners.popitem(last=False)

    def owns(self, policy: LimitPolicy, object_id: str, now: float | None = None) -> bool:
        entry = self._owners.get(object_id)
        if entry is None:
            return False
        owner, expiry, _ = entry
        return owner == owner_of(policy.key_id, policy.tenant) and expiry > (now or self.clock())

    def snapshot_now(self, policy: LimitPolicy) -> UsageSnapshot:
        plan = self.plan(policy)
        now = self.clock()
        second = int(now)
        window, reads, _ = self._counters.get(plan.names.reads, (second, 0, 0.0))
        reads = reads + 1 if window == second else 1
        self._counters[plan.names.reads] = (second, reads, second + 1.0)
        if reads > USAGE_READS_PER_SECOND:
            raise ReadsExceeded(second + 1 - now)
        day = _utc(now).date().isoformat()

        def sums(base: str | None, period: str) -> Totals | None:
            return None if base is None else self._sums.get((base, period), Totals())

        return UsageSnapshot(
            limits=limit_states(plan, self._standing(plan, now)),
            key_today=sums(plan.names.key_sums, day) or Totals(),
            key_month=sums(plan.names.key_sums, day[:7]) or Totals(),
            tenant_today=sums(plan.names.tenant_sums, day),
            tenant_month=sums(plan.names.tenant_sums, day[:7]),
        )

    def _standing(self, plan: Plan, now: float) -> Standing:
        day = _utc(now).date().isoformat()
        spent = []
        for budget in plan.spend:
            base = plan.names.key_sums if budget.scope == "key" else plan.names.tenant_sums
            period = day if budget.period == "day" else day[:7]
            seen = self._seen.get((base, period))  # type: ignore[arg-type]
            own = self._sums.get((base, period), Totals()).cost_ticks  # type: ignore[arg-type]
            spent.append(own if seen is None else seen)
        live = 0
        if plan.concurrent is not None:
            live = len(self._live_leases(plan.names.leases, now))
        names = plan.names
        return Standing(
            now_ms=int(now * 1000),
            requests=[self._used(w, now) for w in plan.requests],
            tokens=[self._used(w, now) for w in plan.tokens],
            spent=spent,
            live=live,
            held_key=self._held.get(names.key_sums, 0),
            held_tenant=self._held.get(names.tenant_sums, 0) if names.tenant_sums else 0,
        )

    def _live_leases(self, concurrency_key: str, now: float) -> dict[str, float]:
        leases = self._leases.setdefault(concurrency_key, {})
        # Scanned only once the earliest expiry has come, not on every admission: with
        # thousands of streams in flight, a scan each time cost more than the rest of it.
        if now >= self._lease_due.get(concurrency_key, 0.0):
            for lease_id in [k for k, expiry in leases.items() if expiry <= now]:
                del leases[lease_id]
            self._lease_due[concurrency_key] = min(leases.values(), default=math.inf)
        return leases

    def _used(self, window: WindowPlan, now: float) -> int:
        entry = self._counters.get(window.key)
        if entry is None or entry[0] != _index(window, now):
            return 0
        return entry[1]

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_SECONDS
        for key in [k for k, (_, _, expiry) in self._counters.items() if expiry <= now]:
            del self._counters[key]
        for key in [k for k, leases in self._leases.items() if not leases]:
            del self._leases[key]
            self._lease_due.pop(key, None)
        today = _utc(now).date()
        for key in [k for k in self._sums if not k[1].startswith(today.isoformat()[:7])]:
            del self._sums[key]  # last month's sums; this month's days stay (a few per key)
        for key in [k for k in self._seen if not k[1].startswith(today.isoformat()[:7])]:
            del self._seen[key]
        self.ledger.prune(today)


def _index(window: WindowPlan, now: float) -> int:
    return int(now * 1000) // (window.seconds * 1000)


def _end(window: WindowPlan, now: float) -> float:
    return (_index(window, now) + 1) * window.seconds


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
