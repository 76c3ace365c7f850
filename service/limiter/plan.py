"""A policy turned into what a store needs per admission, computed once per policy.

Rate windows are fixed windows aligned on the clock (`floor(now / seconds)`), one counter per
period: two windows of the same length are one window at the lower limit. Keyed by period,
not limit, so a changed limit keeps the count already spent. The Redis names come from
`service.redis.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.limiter.policy import LimitPolicy, SpendLimit, Window
from service.redis.keys import KeyNames


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
    key: str  # base of the counter it reads: the key's spend, or its tenant's sums


@dataclass(frozen=True, slots=True)
class Plan:
    names: KeyNames
    requests: tuple[WindowPlan, ...]  # the key's windows, then its tenant's
    tokens: tuple[WindowPlan, ...]  # likewise
    concurrent: int | None  # the key's cap on requests in flight
    spend: tuple[SpendPlan, ...]  # the key's budgets, then its tenant's

    @property
    def key_id(self) -> str:
        return self.names.key_id

    @property
    def tenant(self) -> str | None:
        return self.names.tenant


# Plans are cached per policy; keys issued and deleted through the admin API leave policies
# nobody uses: past this many, a store's cache starts over (rebuilt on the next request).
PLANS_CACHED = 50_000


def build_plan(policy: LimitPolicy, prefix: str) -> Plan:
    names = KeyNames(prefix, policy.key_id, policy.tenant)
    requests = _windows(policy.requests, names, "requests", "key")
    tokens = _windows(policy.tokens, names, "tokens", "key")
    spend = _spend(policy.spend, "key", names.key_spend)
    if names.tenant_sums is not None:
        requests += _windows(policy.tenant_requests, names, "requests", "tenant")
        tokens += _windows(policy.tenant_tokens, names, "tokens", "tenant")
        spend += _spend(policy.tenant_spend, "tenant", names.tenant_sums)
    return Plan(names, requests, tokens, policy.concurrent or None, spend)


def _windows(
    windows: tuple[Window, ...], names: KeyNames, kind: str, scope: str
) -> tuple[WindowPlan, ...]:
    by_period: dict[int, int] = {}
    for window in windows:
        by_period[window.seconds] = min(window.limit, by_period.get(window.seconds, window.limit))
    code = "req" if kind == "requests" else "tok"
    return tuple(
        WindowPlan(names.window(code, scope, seconds), limit, seconds, kind, scope)
        for seconds, limit in sorted(by_period.items())
    )


def _spend(limits: tuple[SpendLimit, ...], scope: str, key: str) -> tuple[SpendPlan, ...]:
    return tuple(SpendPlan(scope, s.period, s.ticks, s.text, key) for s in limits)


_UNITS = (("year", 360 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600))
_UNITS += (("minute", 60), ("second", 1))


def window_label(seconds: int) -> str:
    """A window's length as people (and `limits`) write it: "1 minute", "2 hours"."""
    for unit, length in _UNITS:
        if seconds % length == 0:
            count = seconds // length
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"  # unreachable: every length divides by one second
