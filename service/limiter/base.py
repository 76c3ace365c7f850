"""The limiter's contract: admit a request against a policy, release it when it ends.

Also what the usage endpoints read: a key's budgets and usage, and the ledger.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from datetime import date
from typing import Literal, Protocol

from service.limiter.policy import LimitPolicy
from service.usage.ledger import LedgerRow, UsageSnapshot
from service.usage.record import Charge

RejectReason = Literal[
    "rate_limit_exceeded",
    "tokens_limit_exceeded",
    "concurrency_limit_exceeded",
    "spend_limit_exceeded",  # wins over the others when several budgets are spent
    "not_found",  # owner_check names a response id the key's tenant does not own
]


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix, _counter = os.urandom(8).hex(), itertools.count()


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


def new_id() -> str:
    """A unique admission (and lease) id: this process's random prefix and a counter.

    Cheaper than a uuid4 per request, and as unique: 64 random bits per process.
    """
    return f"{_prefix}{next(_counter):x}"


class LimiterUnavailable(Exception):
    """The limiter store cannot be reached and the failure mode is `closed` (or, for the
    ledger, whatever the mode: a replica's memory is no ledger)."""


USAGE_READS_PER_SECOND = 5  # a key's usage reads, across replicas (SPEC 15)


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
    extra: dict = field(default_factory=dict)


class Limiter(Protocol):
    """Counts requests, tokens and concurrent slots per key (and per tenant)."""

    mode: str  # "redis", "memory", or "local-fallback" while Redis is unreachable

    async def start(self) -> None:
        """Open connections and background tasks (lease refresh, recovery probe)."""

    async def aclose(self) -> None:
        """Stop background tasks and close connections."""

    async def admit(self, policy: LimitPolicy, owner_check: str | None = None) -> Decision:
        """Check every limit, then consume one request unit and a slot, atomically.

        With `owner_check`, refuse with reason `not_found` (consuming nothing) unless the
        key's tenant (a key without one is its own tenant) owns that response id.
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

    async def ledger_rows(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> list[LedgerRow]:
        """Ledger rows from day `first` to `last` (UTC, inclusive), optionally of one
        tenant (`-`: keys without one) or key. Raises LimiterUnavailable while Redis is down.
        """

    def ready(self) -> tuple[bool, str]:
        """Whether this replica can serve, and a one-line description for /readyz."""
