"""Helpers for the usage and billing tests: prices, expected costs, exact USD, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

MODEL = "grok-4-1-fast-non-reasoning"
REASONING_MODEL = "grok-4-1-fast-reasoning"

# Whole ticks per token, so an expected cost needs no rounding: USD 1 per million input
# tokens is 10,000 ticks a token, 0.25 is 2,500, 2 is 20,000.
PRICES_TOML = f"""
[prices."{MODEL}"]
input = 1
cached_input = 0.25
output = 2

[prices."{REASONING_MODEL}"]
input = 1
cached_input = 0.25
output = 2
"""
INPUT_TICKS, CACHED_TICKS, OUTPUT_TICKS = 10_000, 2_500, 20_000

MEASURES = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
)


def admin_entry(key_id: str, secret: str) -> str:
    from tests.support.keyfiles import digest

    return f'[[admin_keys]]\nid = "{key_id}"\nsha256 = "{digest(secret)}"\n'


def measured(usage: dict[str, Any]) -> dict[str, int]:
    """What the ledger should record for one response's chat `usage` (cost in ticks)."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    ticks = usage.get("cost_in_usd_ticks")
    if ticks is None:  # the upstream did not report it: the key file's prices
        ticks = (
            (usage["prompt_tokens"] - cached) * INPUT_TICKS
            + cached * CACHED_TICKS
            + (usage["completion_tokens"] + reasoning) * OUTPUT_TICKS
        )
    return {
        "requests": 1,
        "input_tokens": usage["prompt_tokens"],
        "cached_input_tokens": cached,
        "output_tokens": usage["completion_tokens"],
        "reasoning_tokens": reasoning,
        "cost_ticks": ticks,
    }


def add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {name: total.get(name, 0) + value for name, value in more.items()}


def as_shown(sums: dict[str, int]) -> dict[str, Any]:
    """The six measures as the API shows them, cost as an exact Decimal of USD."""
    shown: dict[str, Any] = {name: sums.get(name, 0) for name in MEASURES[:-1]}
    shown["cost_usd"] = Decimal(sums.get("cost_ticks", 0)) / 10**10
    inputs, cached = shown["input_tokens"], shown["cached_input_tokens"]
    shown["cache_hit_ratio"] = Decimal(str(round(cached / inputs, 4))) if inputs else None
    return shown


def exact_json(response: httpx.Response) -> Any:
    """The body with numbers that have a fraction read as Decimal, so money compares exactly."""
    import json

    return json.loads(response.content, parse_float=Decimal)


def chat(url: str, secret: str, content: str = "hi", model: str = MODEL) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )


def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 3.0) -> T:
    """Poll `read` until `done` holds (the ledger is written as the request is released,
    which may be a moment after the client has its answer); return the last value."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value
