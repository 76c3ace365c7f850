"""A policy turned into what a store needs per admission, computed once per policy.

Keys share one Redis Cluster hash tag per tenant (or per key without a tenant), so every key
one admission touches lives in one slot and one Lua script can check and consume them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.limiter.policy import LimitPolicy, Window


@dataclass(frozen=True, slots=True)
class WindowPlan:
    key: str  # base name; the store appends the window index
    limit: int
    seconds: int
    kind: str  # "requests" or "tokens"


@dataclass(frozen=True, slots=True)
class Plan:
    base: str  # prefix and hash tag: every key of this policy starts with it
    requests: tuple[WindowPlan, ...]  # the key's windows, then its tenant's
    tokens: tuple[WindowPlan, ...]
    concurrency_key: str | None
    concurrent: int | None


def build_plan(policy: LimitPolicy, prefix: str) -> Plan:
    tag = f"t:{policy.tenant}" if policy.tenant else f"k:{policy.key_id}"
    base = f"{prefix}:{{{tag}}}"
    requests = _windows(policy.requests, f"{base}:req:k:{policy.key_id}", "requests")
    requests += _windows(policy.tenant_requests, f"{base}:req:t:{policy.tenant}", "requests")
    return Plan(
        base=base,
        requests=requests,
        tokens=_windows(policy.tokens, f"{base}:tok:{policy.key_id}", "tokens"),
        concurrency_key=f"{base}:conc:{policy.key_id}" if policy.concurrent else None,
        concurrent=policy.concurrent,
    )


def _windows(windows: tuple[Window, ...], base: str, kind: str) -> tuple[WindowPlan, ...]:
    # One counter per period: two windows of the same length are one window at the lower
    # limit. Keyed by period, not limit, so a changed limit keeps the count already spent.
    by_period: dict[int, int] = {}
    for window in windows:
        by_period[window.seconds] = min(window.limit, by_period.get(window.seconds, window.limit))
    return tuple(
        WindowPlan(f"{base}:{seconds}", limit, seconds, kind)
        for seconds, limit in sorted(by_period.items())
    )
