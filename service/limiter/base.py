"""The limiter's contract: admit a request against a policy, release it when it ends.

Also what the usage answer reads: where a key's budgets stand now (`UsageSnapshot`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from service.limiter.policy import LimitPolicy
from service.usage.record import Charge, Totals

RejectReason = Literal[
    "rate_limit_exceeded",
    "tokens_limit_exceeded",
    "concurrency_limit_exceeded",
    "spend_limit_exceeded",  # wins over the others when several budgets are spent
    "not_found",  # `owned` names a stored object the key's tenant does not own
]

USAGE_READS_PER_SECOND = 5  # a key's usage reads, across replicas (SPEC 15)
RESPONSE_SECONDS = 30 * 86400  # ownership of a response id lasts as long as xAI keeps it
MAX_RESPONSE_ID_CHARS = 256  # longer ids are never recorded, so never owned


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix, _counter = os.urandom(8).hex(), itertools.count()


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


def new_id() -> str:
    """A unique admission (and lease) id: this process's random prefix and a counter
    (64 random bits per process make it as unique as a uuid4, for less)."""
    return f"{_prefix}{next(_counter):x}"


class LimiterUnavailable(Exception):
    """The limiter's store cannot be reached and the failure mode is `closed`."""


class ReadsExceeded(Exception):
    """A key read its usage more than USAGE_READS_PER_SECOND times this second."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"usage read more than {USAGE_READS_PER_SECOND} times a second")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class WindowState:
    """The most restrictive window of one kind (requests or tokens) after a decision."""

    limit: int
    remaining: int
    reset_seconds: float  # until this window starts afresh
    window_seconds: int = 0  # the window's length, for the IETF RateLimit-Policy field


@dataclass(slots=True)
class Decision:
    """The outcome of one admission.

    A refused decision spent nothing. An admitted one must be passed back to `release`
    exactly once, whatever happens to the request.
    """

    allowed: bool
    reason: RejectReason | None = None
    retry_after: int = 0  # whole seconds, >= 1 when refused
    requests: WindowState | None = None
    tokens: WindowState | None = None
    spend_limit: str | None = None  # when refused for spend: "tenant budget $500/month"
    lease: str | None = None  # concurrency lease id, when the policy caps concurrency
    store: str = "memory"  # which store admitted it: "redis" or "memory"
    id: str = ""  # unique per admission; its release applies once under this id
    admitted_at: float = 0.0  # time.monotonic() at admission
    missing: str | None = None  # when refused `not_found`: the first id the tenant does not own
    held: int = 0  # ticks of estimated cost it holds against spend budgets until released
    upstream: str | None = None  # the upstream recorded with the first stored object named


@dataclass(frozen=True, slots=True)
class LimitState:
    """Where one budget stands now. Spend in ticks; concurrency has no window or reset."""

    scope: str  # "key" or "tenant"
    kind: str  # "requests", "tokens", "spend" or "concurrent"
    window: str | None  # "1 minute", "1 day"... for rates; "day" or "month" for spend
    limit: int
    remaining: int
    reset_seconds: float | None


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """A key's budgets and usage (today and this month, UTC), read without spending any."""

    limits: list[LimitState]
    key_today: Totals
    key_month: Totals
    tenant_today: Totals | None  # None for a key without a tenant
    tenant_month: Totals | None


class Limiter(Protocol):
    """Counts requests, tokens, spend and concurrent slots per key (and per tenant)."""

    async def start(self) -> None:
        """Open connections and background tasks (lease refresh, recovery probe)."""

    async def aclose(self) -> None:
        """Stop background tasks and close connections."""

    async def admit(
        self, policy: LimitPolicy, owned: Sequence[str] = (), hold: int = 0
    ) -> Decision:
        """Check every limit, then consume one request unit and a slot, atomically; with
        spend budgets, hold `hold` ticks (the request's estimated cost) until its release.

        Refuse with reason `not_found` (consuming nothing) unless the key's tenant (a key
        without one is its own tenant) owns every stored object id in `owned`.
        Raises LimiterUnavailable when the store is down and the failure mode is `closed`.
        """

    async def release(self, policy: LimitPolicy, decision: Decision, charge: Charge) -> None:
        """Free the slot; charge tokens, spend and the ledger; record or forget a response id.

        Every admitted request is released exactly once, whatever happened to it.
        """

    async def usage_snapshot(self, policy: LimitPolicy) -> UsageSnapshot:
        """The key's (and its tenant's) budgets and usage now, consuming no budget.

        Raises ReadsExceeded past USAGE_READS_PER_SECOND reads of one key in a second, and
        LimiterUnavailable when Redis is down and the failure mode is `closed`.
        """

    def ready(self) -> tuple[bool, str]:
        """Whether this replica can serve, and a one-line description for /readyz."""
