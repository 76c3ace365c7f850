"""Model prices: the key file's `[prices."model"]` tables, exact to the tick.

Prices are looked up by the upstream's (aliased) model name. They price a request only when
the upstream did not report its cost (`cost.py`). The parsers raise ValueError with a message
that already names the entry; the key-file loader adds the file's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from service.usage.record import TICKS_PER_USD

_FIELDS = ("input", "cached_input", "output")


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


PriceTable = Mapping[str, Price]  # upstream model name -> its price


def _ticks(usd: Decimal) -> int:
    return int(Decimal(usd) * TICKS_PER_USD)


def _list(input: str, cached: str, output: str) -> Price:
    return Price.from_usd(Decimal(input), Decimal(cached), Decimal(output))


# xAI's list prices (USD per million tokens: input, cached input, output), read from its
# models page in December 2026. They price only the estimate a request reserves against spend
# budgets at admission; what a request is charged comes from the upstream's own cost, else the
# key file's [prices]. A model not listed is estimated at UNLISTED, the dearest list price, so
# an unknown name never under-reserves.
LIST_PRICES: dict[str, Price] = {
    "grok-4": _list("3.00", "0.75", "15.00"),
    "grok-4-0709": _list("3.00", "0.75", "15.00"),
    "grok-4-1-fast-reasoning": _list("0.20", "0.05", "0.50"),
    "grok-4-1-fast-non-reasoning": _list("0.20", "0.05", "0.50"),
    "grok-4-fast-reasoning": _list("0.20", "0.05", "0.50"),
    "grok-4-fast-non-reasoning": _list("0.20", "0.05", "0.50"),
    "grok-4.3": _list("1.25", "0.3125", "2.50"),
    "grok-4.5": _list("2.00", "0.50", "6.00"),
    "grok-4.6": _list("2.00", "0.50", "6.00"),
    "grok-4.7": _list("2.00", "0.50", "6.00"),
    "grok-code-fast-1": _list("0.20", "0.02", "1.50"),
    "grok-3": _list("3.00", "0.75", "15.00"),
    "grok-3-mini": _list("0.30", "0.075", "0.50"),
    "grok-2-vision-1212": _list("2.00", "2.00", "10.00"),
}
UNLISTED = _list("3.00", "3.00", "15.00")


def estimate_price(model: str | None, prices: PriceTable) -> Price:
    """The price an admission's estimate uses: the key file's, else xAI's list price, else
    UNLISTED."""
    if model is None:
        return UNLISTED
    return prices.get(model) or LIST_PRICES.get(model) or UNLISTED


def parse_prices(table: Any, aliases: Mapping[str, str]) -> dict[str, Price]:
    """`[prices."model"]` tables of USD per million tokens (numbers read as Decimal).

    `input` and `output` are required; `cached_input` defaults to `input` (no discount). A
    price for a name that `aliases` rewrites is refused: it would never be used.
    """
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ValueError('[prices] must hold tables like [prices."model-name"]')
    prices: dict[str, Price] = {}
    for model, entry in table.items():
        where = f'[prices."{model}"]'
        if model in aliases:
            raise ValueError(
                f'{where}: never used, "{model}" is an alias of "{aliases[model]}" '
                "(prices are looked up by the upstream's name)"
            )
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a table with input, cached_input, output")
        unknown = set(entry) - set(_FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
        for required in ("input", "output"):
            if required not in entry:
                raise ValueError(f"{where}: {required} is required (USD per million tokens)")
        usd = {name: _usd(entry[name], f"{where}: {name}") for name in entry}
        usd.setdefault("cached_input", usd["input"])
        prices[model] = Price.from_usd(usd["input"], usd["cached_input"], usd["output"])
    return prices


def _usd(value: Any, where: str) -> Decimal:
    """A non-negative USD amount per million tokens, a whole number of ticks."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"{where}: must be a number (USD per million tokens), got {value!r}")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{where}: must be a finite number >= 0, got {value}")
    if amount * TICKS_PER_USD != int(amount * TICKS_PER_USD):
        raise ValueError(f"{where}: {value} has more than 10 decimal places (1 tick = 1e-10 USD)")
    return amount
