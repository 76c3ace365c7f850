"""A policy turned into what a store needs per admission, computed once per policy.

Keys share one Redis Cluster hash tag per tenant (or per key without a tenant), so every key
one admission or release touches lives in one slot and one Lua script can check and consume
them all. Rate windows (with the default prefix `gw`):

    gw:{tag}:req:k:<key id>:<seconds>:<window index>   int   the key's requests
    gw:{tag}:req:t:<tenant>:<seconds>:<window index>   int   its tenant's
    gw:{tag}:tok:k:<key id>:<seconds>:<window index>   int   the key's tokens
    gw:{tag}:tok:t:<tenant>:<seconds>:<window index>   int   its tenant's
    gw:{tag}:conc:<key id>                             zset  lease id -> expiry (ms)

The ledger, the day and month sums that spend budgets read, and response ownership are laid
out in `usage/ledger.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.limiter.base import WindowState
from service.limiter.policy import LimitPolicy, SpendLimit, Window
from service.usage.ledger import LimitState, tag_base


@dataclass(frozen=True, slots=True)
class WindowPlan:
    key: str  # base name; the store appends the window index
    limit: int
    seconds: int
    kind: str  # "requests" or "tokens"
    scope: str  # "key" or "tenant"


@dataclass(frozen=True, slots=True)
class SpendPlan:
    scope: str  # "key" or "tenant"
    period: str  # "day" or "month"
    ticks: int
    text: str  # as written, e.g. "500/month"


@dataclass(frozen=True, slots=True)
class Plan:
    base: str  # prefix and hash tag: every key of this policy starts with it
    key_id: str
    tenant: str | None
    requests: tuple[WindowPlan, ...]  # the key's windows, then its tenant's
    tokens: tuple[WindowPlan, ...]  # likewise
    concurrency_key: str | None
    concurrent: int | None
    spend: tuple[SpendPlan, ...]  # the key's budgets, then its tenant's
    key_spend: str  # base of the key's day and month spend counters
    key_sums: str  # base of the key's day and month sums (what its usage answer reads)
    tenant_sums: str | None  # base of its tenant's day and month sums, if it has one
    ledger: str  # base of the ledger's day hashes
    responses: str  # base of the response ownership keys
    reads: str  # base of the key's one-second usage-read windows


def build_plan(policy: LimitPolicy, prefix: str) -> Plan:
    key, tenant = policy.key_id, policy.tenant
    base = tag_base(prefix, key, tenant)
    requests = _windows(policy.requests, f"{base}:req:k:{key}", "requests", "key")
    tokens = _windows(policy.tokens, f"{base}:tok:k:{key}", "tokens", "key")
    spend = _spend(policy.spend, "key")
    if tenant:
        requests += _windows(policy.tenant_requests, f"{base}:req:t:{tenant}", "requests", "tenant")
        tokens += _windows(policy.tenant_tokens, f"{base}:tok:t:{tenant}", "tokens", "tenant")
        spend += _spend(policy.tenant_spend, "tenant")
    return Plan(
        base=base,
        key_id=key,
        tenant=tenant,
        requests=requests,
        tokens=tokens,
        concurrency_key=f"{base}:conc:{key}" if policy.concurrent else None,
        concurrent=policy.concurrent,
        spend=spend,
        key_spend=f"{base}:spend:k:{key}",
        key_sums=f"{base}:sum:k:{key}",
        tenant_sums=f"{base}:sum:t:{tenant}" if tenant else None,
        ledger=f"{base}:led",
        responses=f"{base}:resp",
        reads=f"{base}:reads:{key}",
    )


def _windows(
    windows: tuple[Window, ...], base: str, kind: str, scope: str
) -> tuple[WindowPlan, ...]:
    # One counter per period: two windows of the same length are one window at the lower
    # limit. Keyed by period, not limit, so a changed limit keeps the count already spent.
    by_period: dict[int, int] = {}
    for window in windows:
        by_period[window.seconds] = min(window.limit, by_period.get(window.seconds, window.limit))
    return tuple(
        WindowPlan(f"{base}:{seconds}", limit, seconds, kind, scope)
        for seconds, limit in sorted(by_period.items())
    )


def _spend(limits: tuple[SpendLimit, ...], scope: str) -> tuple[SpendPlan, ...]:
    return tuple(SpendPlan(scope, s.period, s.ticks, s.text) for s in limits)


_UNITS = (("year", 360 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600))
_UNITS += (("minute", 60), ("second", 1))


def window_label(seconds: int) -> str:
    """A window's length as people (and `limits`) write it: "1 minute", "2 hours"."""
    for unit, length in _UNITS:
        if seconds % length == 0:
            count = seconds // length
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"  # unreachable: every length divides by one second


def limit_states(
    plan: Plan,
    windows: Iterable[tuple[int, float]],
    budgets: Iterable[tuple[int, float]],
    live_leases: int,
) -> list[LimitState]:
    """The plan's limits as the usage answer shows them. Given, in the plan's order, each
    request and token window's (units used, seconds to its reset) and each spend budget's
    (ticks spent, seconds to its period's end), and the leases live now."""
    limits = [
        LimitState(
            window.scope,
            window.kind,
            window_label(window.seconds),
            window.limit,
            max(0, window.limit - used),
            reset,
        )
        for window, (used, reset) in zip(plan.requests + plan.tokens, windows, strict=True)
    ]
    limits += [
        LimitState(
            budget.scope, "spend", budget.period, budget.ticks, max(0, budget.ticks - spent), reset
        )
        for budget, (spent, reset) in zip(plan.spend, budgets, strict=True)
    ]
    if plan.concurrency_key is not None:
        cap = plan.concurrent or 0
        limits.append(LimitState("key", "concurrent", None, cap, max(0, cap - live_leases), None))
    return limits


def tightest(states: Iterable[tuple[WindowPlan, int, float]], consumed: int) -> WindowState | None:
    """Of (window, units used, seconds to its reset), the window with the least remaining once
    `consumed` more units are counted (the longest reset on a tie; the first on a full one)."""
    best = None
    for window, used, reset in states:
        remaining = max(0, window.limit - used - consumed)
        if best is None or (remaining, -reset) < (best.remaining, -best.reset_seconds):
            best = WindowState(window.limit, remaining, reset, window.seconds)
    return best
