"""What a key may spend: rate strings parsed once, at key-file load, into windows."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation

import limits

from service.usage.record import TICKS_PER_USD


@dataclass(frozen=True, slots=True)
class Window:
    """One counting window: at most `limit` units per `seconds`."""

    limit: int
    seconds: int
    text: str  # as written, e.g. "600/minute"; for headers and error messages


@dataclass(frozen=True, slots=True)
class SpendLimit:
    """At most `ticks` (1 USD = 10^10) per calendar UTC `period`: "day" or "month"."""

    period: str
    ticks: int
    text: str  # as written, e.g. "500/month"


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Everything the limiter needs to admit one request of one key."""

    key_id: str
    tenant: str | None
    requests: tuple[Window, ...] = ()
    tenant_requests: tuple[Window, ...] = ()
    tokens: tuple[Window, ...] = ()
    concurrent: int | None = None
    spend: tuple[SpendLimit, ...] = ()
    tenant_tokens: tuple[Window, ...] = ()
    tenant_spend: tuple[SpendLimit, ...] = ()
    # The limiter looks its compiled plan up by policy twice a request: hash the fields once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compared = tuple(getattr(self, f.name) for f in fields(self) if f.compare)
        object.__setattr__(self, "_hash", hash(compared))

    def __hash__(self) -> int:
        return self._hash


@functools.lru_cache(maxsize=4096)
def without_cost_budgets(policy: LimitPolicy) -> LimitPolicy:
    """`policy` with its request and concurrency limits only: for requests that cost nothing
    upstream (a tenant's stored responses), which spent token or spend budgets must not stop."""
    return replace(policy, tokens=(), spend=(), tenant_tokens=(), tenant_spend=())


def parse_rates(text: str) -> tuple[Window, ...]:
    """Parse a `limits` rate string ("600/minute;10000/day") into windows.

    Raises ValueError naming the string when it does not parse or a window is not positive.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"rate must be a non-empty string like '60/minute', got {text!r}")
    try:
        items = limits.parse_many(text)
    except ValueError as exc:
        raise ValueError(f"bad rate string {text!r}: {exc}") from None
    windows = []
    for item in items:
        if item.amount <= 0:
            raise ValueError(f"bad rate string {text!r}: amount must be positive")
        windows.append(Window(limit=item.amount, seconds=item.get_expiry(), text=str(item)))
    return tuple(windows)


_MAX_SPEND_USD = Decimal(10) ** 12


def parse_spend(text: str) -> tuple[SpendLimit, ...]:
    """Parse a spend budget in USD ("25/day;500/month", decimals allowed) into limits.

    Raises ValueError naming the string when it does not parse or an amount is not positive.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"spend must be a non-empty string like '500/month', got {text!r}")
    limits_: dict[str, SpendLimit] = {}
    for part in text.split(";"):
        amount, _, period = part.strip().partition("/")
        period = period.strip().lower()
        if period not in ("day", "month"):
            raise ValueError(f"bad spend budget {text!r}: the period must be 'day' or 'month'")
        try:
            usd = Decimal(amount.strip().lstrip("$"))
        except InvalidOperation:
            raise ValueError(
                f"bad spend budget {text!r}: {amount.strip()!r} is not a number"
            ) from None
        if not usd.is_finite() or usd <= 0:
            raise ValueError(f"bad spend budget {text!r}: amounts must be positive")
        if usd > _MAX_SPEND_USD:  # "1e999999999" would take minutes to turn into ticks
            raise ValueError(f"bad spend budget {text!r}: amounts must be at most 10^12 USD")
        ticks = int(usd * TICKS_PER_USD)
        if period in limits_:  # two budgets for one period: the lower one holds
            ticks = min(ticks, limits_[period].ticks)
        limits_[period] = SpendLimit(period, ticks, f"{usd}/{period}")
    return tuple(limits_[p] for p in ("day", "month") if p in limits_)
