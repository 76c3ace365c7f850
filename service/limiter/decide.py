"""How many admissions fit, and why the others are refused: one pure function for both stores.

A store reads where a policy stands (`Standing`); `admissible` says how many of n admissions
fit (Redis's admit.lua counts the same way, inside the script, where it must be atomic),
and `decide` turns that count into each admission's decision: the refusal's reason, when to
retry, and the window the rate-limit headers describe. `limit_states` is the same standing as
the usage answer shows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from service.limiter.base import Decision, LimitState, RejectReason, WindowState
from service.limiter.plan import Plan, SpendPlan, WindowPlan, window_label

_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Standing:
    """A policy's counters as a store read them, before the admissions being decided."""

    now_ms: int  # the store's clock (Redis's, or the process's)
    requests: Sequence[int]  # units counted, per request window of the plan
    tokens: Sequence[int]  # per token window
    spent: Sequence[int]  # ticks spent, per spend budget
    live: int = 0  # concurrency leases held now
    held_key: int = 0  # ticks held against spend budgets by the key's requests in flight
    held_tenant: int = 0  # and by its tenant's

    def held(self, budget: SpendPlan) -> int:
        return self.held_tenant if budget.scope == "tenant" else self.held_key


def admissible(plan: Plan, standing: Standing, holds: Sequence[int]) -> int:
    """How many of the admissions fit, each holding its estimate (`holds`, ticks): each
    takes a unit of every request window; a spent token window or spend budget admits none;
    the concurrency cap admits its free slots; then, in order, each must fit its estimate in
    every spend budget beside what is spent and held (those before it included), unless
    nothing is held yet."""
    admitted = len(holds)
    for window, used in zip(plan.requests, standing.requests, strict=True):
        admitted = min(admitted, max(0, window.limit - used))
    if any(used >= w.limit for w, used in zip(plan.tokens, standing.tokens, strict=True)):
        admitted = 0
    if any(spent >= b.ticks for b, spent in zip(plan.spend, standing.spent, strict=True)):
        admitted = 0
    if plan.concurrent is not None:
        admitted = min(admitted, max(0, plan.concurrent - standing.live))
    before = 0
    for j in range(admitted):
        if _over_held(plan, standing, before, holds[j]) is not None:
            return j
        before += holds[j]
    return admitted


def _over_held(plan: Plan, standing: Standing, before: int, amount: int) -> SpendPlan | None:
    """The first spend budget an admission holding `amount` would pass, with `before` more
    held by the admissions ahead of it; None when it fits (or nothing is held yet)."""
    for budget, spent in zip(plan.spend, standing.spent, strict=True):
        held = standing.held(budget) + before
        if held > 0 and spent + held + amount > budget.ticks:
            return budget
    return None


def decide(
    plan: Plan,
    standing: Standing,
    ids: Sequence[str],
    holds: Sequence[int],
    admitted: int,
    store: str,
    at: float,
) -> list[Decision]:
    """The decisions of admissions `ids` (holding `holds`), in order, of which the first
    `admitted` were admitted; `at` is the process's monotonic clock then (for the release's
    age)."""
    now = standing.now_ms
    requests = [
        (w, used, _window_reset(w, now))
        for w, used in zip(plan.requests, standing.requests, strict=True)
    ]
    tokens = [
        (w, used, _window_reset(w, now))
        for w, used in zip(plan.tokens, standing.tokens, strict=True)
    ]
    token_state = tightest(tokens, 0)
    leased = plan.concurrent is not None
    decisions = [
        Decision(
            allowed=True,
            requests=tightest(requests, i + 1),  # its unit and those before it
            tokens=token_state,
            lease=admission if leased else None,
            store=store,
            id=admission,
            admitted_at=at,
            held=holds[i] if plan.spend else 0,
        )
        for i, admission in enumerate(ids[:admitted])
    ]
    if admitted < len(ids):
        reason, retry, spent = _refusal(plan, standing, requests, tokens, holds, admitted)
        decisions += [
            Decision(
                allowed=False,
                reason=reason,
                retry_after=max(1, math.ceil(retry)),
                requests=tightest(requests, admitted),
                tokens=token_state,
                spend_limit=spent,
                store=store,
            )
            for _ in ids[admitted:]
        ]
    return decisions


def _refusal(
    plan: Plan,
    standing: Standing,
    requests: list[tuple[WindowPlan, int, float]],
    tokens: list[tuple[WindowPlan, int, float]],
    holds: Sequence[int],
    admitted: int,
) -> tuple[RejectReason, float, str | None]:
    """Why the first refused admission (which sees the units and holds of those admitted
    before it) is refused, in how many seconds to retry, and the spend budget at fault. A
    spent budget wins over the rest; a budget held by requests in flight frees as they end."""
    spent = [
        (budget, period_end_ms(budget.period, standing.now_ms) - standing.now_ms)
        for budget, ticks in zip(plan.spend, standing.spent, strict=True)
        if ticks >= budget.ticks
    ]
    if spent:
        budget = spent[0][0]
        retry = max(reset for _, reset in spent) / 1000
        return "spend_limit_exceeded", retry, f"{budget.scope} budget ${budget.text}"
    reason: RejectReason | None = None
    retry = 0.0
    for window, used, reset in requests:
        if used + admitted + 1 > window.limit:
            reason = reason or "rate_limit_exceeded"
            retry = max(retry, reset)
    for window, used, reset in tokens:
        if used >= window.limit:
            reason = reason or "tokens_limit_exceeded"
            retry = max(retry, reset)
    if reason is not None:
        return reason, retry, None
    if plan.concurrent is not None and standing.live + admitted >= plan.concurrent:
        return "concurrency_limit_exceeded", 1.0, None
    held = _over_held(plan, standing, sum(holds[:admitted]), holds[admitted])
    if held is not None:
        text = f"{held.scope} budget ${held.text}, the rest held by requests in flight"
        return "spend_limit_exceeded", 1.0, text
    return "concurrency_limit_exceeded", 1.0, None


def limit_states(plan: Plan, standing: Standing) -> list[LimitState]:
    """Every limit of the plan as the usage answer shows it: windows, budgets, then the cap."""
    now = standing.now_ms
    states = [
        LimitState(
            w.scope,
            w.kind,
            window_label(w.seconds),
            w.limit,
            max(0, w.limit - used),
            _window_reset(w, now),
        )
        for w, used in zip(
            plan.requests + plan.tokens, [*standing.requests, *standing.tokens], strict=True
        )
    ]
    states += [
        LimitState(
            b.scope,
            "spend",
            b.period,
            b.ticks,
            max(0, b.ticks - spent),
            (period_end_ms(b.period, now) - now) / 1000,
        )
        for b, spent in zip(plan.spend, standing.spent, strict=True)
    ]
    if plan.concurrent is not None:
        cap = plan.concurrent
        states.append(LimitState("key", "concurrent", None, cap, max(0, cap - standing.live), None))
    return states


def tightest(states: Sequence[tuple[WindowPlan, int, float]], consumed: int) -> WindowState | None:
    """Of (window, units used, seconds to its reset), the window with the least remaining once
    `consumed` more units are counted (the longest reset on a tie; the first on a full one)."""
    best = None
    for window, used, reset in states:
        remaining = max(0, window.limit - used - consumed)
        if best is None or (remaining, -reset) < (best.remaining, -best.reset_seconds):
            best = WindowState(window.limit, remaining, reset, window.seconds)
    return best


def period_end_ms(period: str, now_ms: int) -> int:
    """When the calendar `period` ("day" or "month", UTC) that `now_ms` falls in ends."""
    if period == "day":
        return (now_ms // _DAY_MS + 1) * _DAY_MS
    today = datetime.fromtimestamp(now_ms / 1000, UTC)
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1000


def _window_reset(window: WindowPlan, now_ms: int) -> float:
    """Seconds until the window that `now_ms` falls in ends."""
    length = window.seconds * 1000
    return ((now_ms // length + 1) * length - now_ms) / 1000
