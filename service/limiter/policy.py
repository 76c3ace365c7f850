"""What a key may spend: rate strings parsed once, at key-file load, into windows."""

from __future__ import annotations

from dataclasses import dataclass

import limits


@dataclass(frozen=True, slots=True)
class Window:
    """One counting window: at most `limit` units per `seconds`."""

    limit: int
    seconds: int
    text: str  # as written, e.g. "600/minute"; for headers and error messages


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Everything the limiter needs to admit one request of one key."""

    key_id: str
    tenant: str | None
    requests: tuple[Window, ...] = ()
    tenant_requests: tuple[Window, ...] = ()
    tokens: tuple[Window, ...] = ()
    concurrent: int | None = None


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
