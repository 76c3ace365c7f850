"""In-process counters: the limiter without Redis (one replica), and the `local` fallback.

One event loop runs every admission to its end without awaiting, so check-all-then-consume
is atomic here without locks. Same fixed windows, spend periods (calendar UTC day and
month), ledger and response ownership as the Redis store, on this process's clock. The
ledger is pruned after `retention_days`; ownership keeps at most OWNED_RESPONSES ids.
"""

from __future__ import annotations

import collections
import math
import time
from datetime import UTC, date, datetime, timedelta

from service.limiter.base import USAGE_READS_PER_SECOND, Decision, ReadsExceeded, new_id
from service.limiter.plan import Plan, WindowPlan, build_plan, limit_states, tightest
from service.limiter.policy import LimitPolicy
from service.usage.ledger import (
    MAX_RESPONSE_ID_CHARS,
    NO_TENANT,
    RESPONSE_SECONDS,
    LedgerRow,
    Totals,
    UsageSnapshot,
    ledger_model,
    owner_of,
)
from service.usage.record import Charge

_SWEEP_SECONDS = 60.0
OWNED_RESPONSES = 100_000  # ids remembered; the oldest are forgotten first


class MemoryLimiter:
    mode = "memory"

    def __init__(
        self, lease_seconds: float = 30.0, prefix: str = "gw", retention_days: int = 400
    ) -> None:
        self.lease_seconds = lease_seconds
        self.prefix = prefix
        self.retention_days = retention_days
        self._counters: dict[str, tuple[int, int, float]] = {}  # key -> (window, used, expiry)
        self._leases: dict[str, dict[str, float]] = {}  # concurrency key -> lease id -> expiry
        self._lease_due: dict[str, float] = {}  # concurrency key -> its earliest lease expiry
        self._sums: dict[tuple[str, str], Totals] = {}  # (sums base, day or month) -> totals
        self._ledger: dict[tuple[date, str, str, str], Totals] = {}  # day, tenant, key, model
        self._owners: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._plans: dict[LimitPolicy, Plan] = {}
        self._next_sweep = 0.0

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def ready(self) -> tuple[bool, str]:
        return True, "memory: counted in this process, single replica only"

    async def admit(self, policy: LimitPolicy, owner_check: str | None = None) -> Decision:
        return self.admit_now(policy, owner_check)

    async def release(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        self.release_now(policy, decision, charge)

    async def usage_snapshot(self, policy: LimitPolicy) -> UsageSnapshot:
        return self.snapshot_now(policy)

    async def ledger_rows(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> list[LedgerRow]:
        return [
            LedgerRow(day, row_tenant, row_key, model, totals)
            for (day, row_tenant, row_key, model), totals in sorted(self._ledger.items())
            if first <= day <= last
            and (tenant is None or row_tenant == tenant)
            and (key is None or row_key == key)
        ]

    def plan(self, policy: LimitPolicy) -> Plan:
        plan = self._plans.get(policy)
        if plan is None:
            plan = self._plans[policy] = build_plan(policy, self.prefix)
        return plan

    def admit_now(self, policy: LimitPolicy, owner_check: str | None = None) -> Decision:
        """Check ownership, every window, spend and the concurrency cap; consume if all pass."""
        plan = self.plan(policy)
        now = time.time()
        self._sweep(now)
        if owner_check is not None and not self.owns(policy, owner_check, now):
            return Decision(allowed=False, reason="not_found", store="memory")
        reason, retry = None, 0.0
        request_states = []
        for window in plan.requests:
            used, reset = self._used(window, now)
            request_states.append((window, used, reset))
            if used + 1 > window.limit:
                reason = reason or "rate_limit_exceeded"
                retry = max(retry, reset)
        token_states = []
        for window in plan.tokens:
            used, reset = self._used(window, now)
            token_states.append((window, used, reset))
            if used >= window.limit:
                reason = reason or "tokens_limit_exceeded"
                retry = max(retry, reset)
        leases = None
        if plan.concurrency_key is not None:
            leases = self._live_leases(plan.concurrency_key, now)
            if len(leases) >= (plan.concurrent or 0) and reason is None:
                reason, retry = "concurrency_limit_exceeded", 1.0
        spent = None
        for budget in plan.spend:
            used, reset = self._spent(plan, budget.scope, budget.period, now)
            if used >= budget.ticks:
                if spent is None:
                    spent = f"{budget.scope} budget ${budget.text}"
                    reason, retry = "spend_limit_exceeded", reset
                retry = max(retry, reset)
        allowed = reason is None
        admission = new_id()
        lease = None
        if allowed:
            for window, used, reset in request_states:
                index = int(now // window.seconds)
                self._counters[window.key] = (index, used + 1, now + reset)
            if leases is not None:
                lease = admission
                leases[lease] = expiry = now + self.lease_seconds
                due = self._lease_due
                due[plan.concurrency_key] = min(due.get(plan.concurrency_key, math.inf), expiry)
        return Decision(
            allowed=allowed,
            reason=reason,
            retry_after=max(1, math.ceil(retry)) if not allowed else 0,
            requests=tightest(request_states, 1 if allowed else 0),
            tokens=tightest(token_states, 0),
            spend_limit=spent,
            lease=lease,
            store="memory",
            id=admission,
            admitted_at=time.monotonic(),
        )

    def release_now(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        plan = self.plan(policy)
        now = time.time()
        tokens = charge.usage.total_tokens
        if tokens > 0:
            for window in plan.tokens:
                used, reset = self._used(window, now)
                self._counters[window.key] = (
                    int(now // window.seconds),
                    used + tokens,
                    now + reset,
                )
        if decision.lease is not None and plan.concurrency_key is not None:
            self._leases.get(plan.concurrency_key, {}).pop(decision.lease, None)
        totals = Totals.of(charge)
        day = _utc(now).date()
        row = (day, plan.tenant or NO_TENANT, plan.key_id, ledger_model(charge.model))
        self._ledger[row] = self._ledger.get(row, Totals()) + totals
        day_name = day.isoformat()
        for base in (plan.key_spend, plan.tenant_sums):
            if base is not None:
                for period in (day_name, day_name[:7]):
                    self._sums[base, period] = self._sums.get((base, period), Totals()) + totals
        self.note_responses(policy, charge)

    def note_responses(self, policy: LimitPolicy, charge: Charge) -> None:
        """Record and forget response ids as `charge` says (ownership, no counting)."""
        if charge.forget_response is not None:
            self._owners.pop(charge.forget_response, None)
        record = charge.record_response
        if record is not None and len(record) <= MAX_RESPONSE_ID_CHARS:
            self._owners[record] = (
                owner_of(policy.key_id, policy.tenant),
                time.time() + RESPONSE_SECONDS,
            )
            self._owners.move_to_end(record)
            while len(self._owners) > OWNED_RESPONSES:
                self._owners.popitem(last=False)

    def owns(self, policy: LimitPolicy, response_id: str, now: float | None = None) -> bool:
        entry = self._owners.get(response_id)
        if entry is None:
            return False
        owner, expiry = entry
        return owner == owner_of(policy.key_id, policy.tenant) and expiry > (now or time.time())

    def snapshot_now(self, policy: LimitPolicy) -> UsageSnapshot:
        plan = self.plan(policy)
        now = time.time()
        second = int(now)
        window, reads, _ = self._counters.get(plan.reads, (second, 0, 0.0))
        reads = reads + 1 if window == second else 1
        self._counters[plan.reads] = (second, reads, second + 1.0)
        if reads > USAGE_READS_PER_SECOND:
            raise ReadsExceeded(second + 1 - now)
        windows = [self._used(window, now) for window in plan.requests + plan.tokens]
        budgets = [self._spent(plan, b.scope, b.period, now) for b in plan.spend]
        live = 0
        if plan.concurrency_key is not None:
            live = len(self._live_leases(plan.concurrency_key, now))
        limits = limit_states(plan, windows, budgets, live)
        day = _utc(now).date().isoformat()

        def sums(base: str | None, period: str) -> Totals | None:
            return None if base is None else self._sums.get((base, period), Totals())

        return UsageSnapshot(
            limits=limits,
            key_today=sums(plan.key_spend, day) or Totals(),
            key_month=sums(plan.key_spend, day[:7]) or Totals(),
            tenant_today=sums(plan.tenant_sums, day),
            tenant_month=sums(plan.tenant_sums, day[:7]),
        )

    def _spent(self, plan: Plan, scope: str, period: str, now: float) -> tuple[int, float]:
        """Ticks spent in the current calendar `period` by the key or tenant; seconds left."""
        base = plan.key_spend if scope == "key" else plan.tenant_sums
        today = _utc(now).date()
        if period == "day":
            name, end = today.isoformat(), today + timedelta(days=1)
        else:
            name = today.isoformat()[:7]
            end = date(today.year + today.month // 12, today.month % 12 + 1, 1)
        reset = datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp() - now
        return self._sums.get((base, name), Totals()).cost_ticks, reset  # type: ignore[arg-type]

    def _live_leases(self, concurrency_key: str, now: float) -> dict[str, float]:
        leases = self._leases.setdefault(concurrency_key, {})
        # Scanned only once the earliest expiry has come, not on every admission: with
        # thousands of streams in flight, a scan each time cost more than the rest of it.
        if now >= self._lease_due.get(concurrency_key, 0.0):
            for lease_id in [k for k, expiry in leases.items() if expiry <= now]:
                del leases[lease_id]
            self._lease_due[concurrency_key] = min(leases.values(), default=math.inf)
        return leases

    def _used(self, window: WindowPlan, now: float) -> tuple[int, float]:
        index = int(now // window.seconds)
        reset = (index + 1) * window.seconds - now
        entry = self._counters.get(window.key)
        if entry is None or entry[0] != index:
            return 0, reset
        return entry[1], reset

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
        oldest = today - timedelta(days=self.retention_days)
        for row in [r for r in self._ledger if r[0] < oldest]:
            del self._ledger[row]


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
