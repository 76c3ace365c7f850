"""In-process counters: the limiter without Redis (one replica), and the `local` fallback.

One event loop runs every admission to its end without awaiting, so check-all-then-consume
is atomic here without locks. Same fixed windows and semantics as the Redis store.
"""

from __future__ import annotations

import math
import time

from service.limiter.base import Decision, WindowState, new_id
from service.limiter.plan import Plan, WindowPlan, build_plan
from service.limiter.policy import LimitPolicy

_SWEEP_SECONDS = 60.0


class MemoryLimiter:
    mode = "memory"

    def __init__(self, lease_seconds: float = 30.0, prefix: str = "gw") -> None:
        self.lease_seconds = lease_seconds
        self.prefix = prefix
        self._counters: dict[str, tuple[int, int, float]] = {}  # key -> (window, used, expiry)
        self._leases: dict[str, dict[str, float]] = {}  # concurrency key -> lease id -> expiry
        self._plans: dict[LimitPolicy, Plan] = {}
        self._next_sweep = 0.0

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def ready(self) -> tuple[bool, str]:
        return True, "memory: counted in this process, single replica only"

    async def admit(self, policy: LimitPolicy) -> Decision:
        return self.admit_now(policy)

    async def release(self, policy: LimitPolicy, decision: Decision, tokens: int) -> None:
        self.release_now(policy, decision, tokens)

    def plan(self, policy: LimitPolicy) -> Plan:
        plan = self._plans.get(policy)
        if plan is None:
            plan = self._plans[policy] = build_plan(policy, self.prefix)
        return plan

    def admit_now(self, policy: LimitPolicy) -> Decision:
        """Check every window and the concurrency cap; consume only if all pass."""
        plan = self.plan(policy)
        now = time.time()
        self._sweep(now)
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
            leases = self._leases.setdefault(plan.concurrency_key, {})
            for lease_id in [k for k, expiry in leases.items() if expiry <= now]:
                del leases[lease_id]
            if len(leases) >= (plan.concurrent or 0) and reason is None:
                reason, retry = "concurrency_limit_exceeded", 1.0
        allowed = reason is None
        admission = new_id()
        lease = None
        if allowed:
            for window, used, reset in request_states:
                index = int(now // window.seconds)
                self._counters[window.key] = (index, used + 1, now + reset)
            if leases is not None:
                lease = admission
                leases[lease] = now + self.lease_seconds
        return Decision(
            allowed=allowed,
            reason=reason,
            retry_after=max(1, math.ceil(retry)) if not allowed else 0,
            requests=_tightest(request_states, 1 if allowed else 0),
            tokens=_tightest(token_states, 0),
            lease=lease,
            store="memory",
            id=admission,
            admitted_at=time.monotonic(),
        )

    def release_now(self, policy: LimitPolicy, decision: Decision, tokens: int) -> None:
        plan = self.plan(policy)
        now = time.time()
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


def _tightest(states: list[tuple[WindowPlan, int, float]], consumed: int) -> WindowState | None:
    """The window with the least remaining (the longest reset on a tie)."""
    best = None
    for window, used, reset in states:
        remaining = max(0, window.limit - used - consumed)
        if best is None or (remaining, -reset) < (best.remaining, -best.reset_seconds):
            best = WindowState(window.limit, remaining, reset, window.seconds)
    return best
