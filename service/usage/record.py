"""What one request used and cost, read from the upstream's `usage` object.

Chat Completions reports `prompt_tokens`/`completion_tokens` (with `prompt_tokens_details.
cached_tokens` and `completion_tokens_details.reasoning_tokens`); the Responses API reports
`input_tokens`/`output_tokens` (with `input_tokens_details`/`output_tokens_details`). xAI adds
`cost_in_usd_ticks` to both: the billed cost, 1 USD = 10^10 ticks. Money stays in integer
ticks everywhere; dollars appear only when shown to a person.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TICKS_PER_USD = 10_000_000_000


def ticks_to_usd(ticks: int) -> float:
    """Dollars for display (logs, JSON answers); never summed as floats."""
    return ticks / TICKS_PER_USD


@dataclass(slots=True)
class Usage:
    """Tokens and cost of one request. Fields are what the upstream reported (or estimated)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0  # part of input_tokens
    output_tokens: int = 0  # reasoning excluded, whichever API reported it
    reasoning_tokens: int = 0
    total_tokens: int = 0  # charged to token budgets
    cost_ticks: int | None = None  # the upstream's `cost_in_usd_ticks`, when reported
    estimated: bool = False  # no usage arrived (client left, upstream dropped)


def parse_usage(usage: Any) -> Usage | None:
    """The Usage in an upstream `usage` object of either API; None if it is not one.

    Hostile or broken values (strings, negatives, floats, bools) count as absent.
    """
    if not isinstance(usage, dict):
        return None
    chat = "prompt_tokens" in usage or "completion_tokens" in usage
    if chat:
        inputs = _count(usage.get("prompt_tokens"))
        outputs = _count(usage.get("completion_tokens"))
        in_details = usage.get("prompt_tokens_details")
        out_details = usage.get("completion_tokens_details")
    else:
        inputs = _count(usage.get("input_tokens"))
        outputs = _count(usage.get("output_tokens"))
        in_details = usage.get("input_tokens_details")
        out_details = usage.get("output_tokens_details")
    cached = _count(in_details.get("cached_tokens")) if isinstance(in_details, dict) else 0
    reasoning = _count(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    if not chat:
        # The Responses API counts reasoning inside output_tokens; chat reports it apart.
        # Kept apart here, so a price table bills it once and the ledger adds up the same.
        outputs = max(0, outputs - reasoning)
    total = _count(usage.get("total_tokens")) or inputs + outputs + reasoning
    ticks = usage.get("cost_in_usd_ticks")
    return Usage(
        input_tokens=inputs,
        cached_input_tokens=min(cached, inputs),
        output_tokens=outputs,
        reasoning_tokens=reasoning,
        total_tokens=total,
        cost_ticks=_count(ticks) if _is_count(ticks) else None,
    )


def estimated_usage(body_size: int, events: int) -> Usage:
    """What to charge when no usage arrived (the client left, the upstream dropped).

    Rather than nothing: ~4 bytes a prompt token, ~1 token an event relayed.
    """
    inputs = body_size // 4
    return Usage(
        input_tokens=inputs, output_tokens=events, total_tokens=inputs + events, estimated=True
    )


# What the ledger counts, as the codes the Redis hashes use for them (in Totals' field order):
# requests, input, cached input, output and reasoning tokens, cost in ticks.
MEASURES = ("r", "i", "c", "o", "x", "$")
# Each measure a release sends stays below this, so that a batch of them adds up exactly in
# Lua's doubles (< 2^53); nothing real comes near it (2^46 ticks is ~$7,000 a request).
MEASURE_CAP = 2**46 - 1


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over admitted requests: counts and tokens, cost in integer ticks."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_ticks: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*map(operator.add, self.values(), other.values()))

    def values(self) -> tuple[int, ...]:
        """The measures, in field (and MEASURES) order."""
        return _fields_of(self)

    def by_code(self) -> dict[str, int]:
        """Measure code -> amount, each within MEASURE_CAP: what a release writes."""
        return dict(zip(MEASURES, map(min, self.values(), _CAPS), strict=True))

    @classmethod
    def of(cls, charge: Charge) -> Totals:
        """One released request's contribution."""
        usage = charge.usage
        return cls(
            1,
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
            charge.cost_ticks,
        )

    @classmethod
    def from_codes(cls, raw: Mapping[bytes | str, bytes | str | int] | list) -> Totals:
        """From a sums hash (code -> count): HGETALL's mapping or its flat list; absent is 0."""
        if isinstance(raw, list):
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        counts = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        return cls(*(counts.get(code, 0) for code in MEASURES))


_fields_of = operator.attrgetter(*(f.name for f in dataclasses.fields(Totals)))
_CAPS = (MEASURE_CAP,) * len(MEASURES)

# The measures as the usage answers and reports name them (cost in USD there).
MEASURE_NAMES = tuple(
    "cost_usd" if f.name == "cost_ticks" else f.name for f in dataclasses.fields(Totals)
)


@dataclass(slots=True)
class Charge:
    """What the limiter's release writes for one admitted request, in one Redis round trip.

    `model` is the name the client sent ('-' for requests that name none): the ledger and
    logs use it. `cost_ticks` is final: the upstream's ticks, else the price table's, else 0
    with `cost_known` False.
    """

    usage: Usage
    model: str = "-"
    cost_ticks: int = 0
    cost_known: bool = False
    record: tuple[str, ...] = ()  # stored object ids (a response, its items) now the tenant's
    forget_response: str | None = None  # a Responses API id deleted upstream
    upstream: str | None = None  # the upstream that answered: recorded with `record`


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value: Any) -> int:
    return value if _is_count(value) else 0
