"""The cost of a request: xAI's own ticks when reported, else the key file's price table."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from service.usage.record import TICKS_PER_USD, Usage

_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price in ticks per million tokens (exact integers, from USD in the key file)."""

    input: int
    cached_input: int
    output: int  # completion and reasoning tokens alike

    @classmethod
    def from_usd(cls, input: Decimal, cached_input: Decimal, output: Decimal) -> Price:
        """From USD per million tokens (`[prices."model"]` in the key file)."""
        return cls(_ticks(input), _ticks(cached_input), _ticks(output))


def cost_ticks(usage: Usage, price: Price | None) -> tuple[int, bool]:
    """(ticks, known): the upstream's ticks, else priced from the table, else (0, False)."""
    if usage.cost_ticks is not None:
        return usage.cost_ticks, True
    if price is None:
        return 0, False
    uncached = max(0, usage.input_tokens - usage.cached_input_tokens)
    total = (
        uncached * price.input
        + usage.cached_input_tokens * price.cached_input
        + (usage.output_tokens + usage.reasoning_tokens) * price.output
    )
    return -(-total // _MILLION), True  # round up to a whole tick


def _ticks(usd: Decimal) -> int:
    return int(Decimal(usd) * TICKS_PER_USD)
