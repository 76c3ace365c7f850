"""Known charges for driving the limiter's release directly."""

from __future__ import annotations

from service.usage.record import Charge, Usage


def charge(
    tokens: int = 0,
    cost: int = 0,
    model: str = "grok-test",
    record: str | None = None,
    forget: str | None = None,
) -> Charge:
    """A request that used `tokens` (split 3:1 between input and output) and cost `cost` ticks."""
    inputs = tokens - tokens // 4
    usage = Usage(
        input_tokens=inputs,
        output_tokens=tokens - inputs,
        total_tokens=tokens,
        cost_ticks=cost or None,
    )
    return Charge(
        usage=usage,
        model=model,
        cost_ticks=cost,
        cost_known=True,
        record_response=record,
        forget_response=forget,
    )
