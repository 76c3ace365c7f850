"""The cost of a request: xAI's own ticks when reported, else priced from the table."""

from __future__ import annotations

from service.usage.prices import Price
from service.usage.record import Usage

_MILLION = 1_000_000


def cost_ticks(usage: Usage, price: Price | None) -> tuple[int, bool]:
    """(ticks, known): the upstream's ticks, else priced from `price`, else (0, False)."""
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
