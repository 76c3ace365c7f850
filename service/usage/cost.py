"""The cost of a request: xAI's own ticks when reported, else priced from the table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.usage.prices import Price
from service.usage.record import Usage

_MILLION = 1_000_000
# Output tokens a request is expected to use when it sets no cap: what the estimate reserves.
DEFAULT_OUTPUT_TOKENS = 4096
_OUTPUT_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


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


def estimate_ticks(body: Mapping[str, Any] | None, body_size: int, price: Price) -> int:
    """What a request will likely cost, reserved against spend budgets at admission: its input
    as ~4 bytes a token, its output cap (`max_completion_tokens`, `max_tokens` or
    `max_output_tokens`, else DEFAULT_OUTPUT_TOKENS), at `price`, rounded up to a tick."""
    if body is None:
        return 0
    outputs = DEFAULT_OUTPUT_TOKENS
    for name in _OUTPUT_CAPS:
        cap = body.get(name)
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            outputs = cap
            break
    total = (body_size // 4) * price.input + outputs * price.output
    return -(-total // _MILLION)
