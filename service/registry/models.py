"""Model names and prices from the key file: `[models.aliases]` and `[prices."model"]`.

Models are retired upstream; an alias rewrites the name a client sends into the one the
upstream serves. Allow-lists, logs and the ledger keep the client's name; prices are looked
up by the upstream's (aliased) name. Hot-reloaded with the key file.

The parsers here raise ValueError with a message that already names the entry; the key-file
loader adds the file's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from service.usage.cost import Price, cost_ticks
from service.usage.record import TICKS_PER_USD, Usage

_PRICE_FIELDS = ("input", "cached_input", "output")


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    aliases: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)

    def upstream_name(self, model: str) -> str:
        """The model name to send upstream for the one the client asked for."""
        return self.aliases.get(model, model)

    def cost(self, requested_model: str | None, usage: Usage) -> tuple[int, bool]:
        """(ticks, known) for a request that asked for `requested_model`."""
        price = None
        if requested_model is not None:
            price = self.prices.get(self.upstream_name(requested_model))
        return cost_ticks(usage, price)


def parse_catalog(models: Any, prices: Any) -> ModelCatalog:
    """The catalog of the key file's `[models]` and `[prices]` tables (either may be absent).

    Numbers must have been read exactly (`tomllib.loads(..., parse_float=Decimal)`).
    """
    if models is None:
        models = {}
    if not isinstance(models, dict):
        raise ValueError("[models] must be a table")
    unknown = set(models) - {"aliases"}
    if unknown:
        raise ValueError(f"[models]: unknown field(s) {sorted(unknown)}; only [models.aliases]")
    aliases = parse_aliases(models.get("aliases", {}))
    priced = parse_prices({} if prices is None else prices)
    for name in priced:
        if name in aliases:
            raise ValueError(
                f'[prices."{name}"]: never used, "{name}" is an alias of "{aliases[name]}" '
                "(prices are looked up by the upstream's name)"
            )
    return ModelCatalog(aliases=aliases, prices=priced)


def parse_aliases(table: Any) -> dict[str, str]:
    """`"old-name" = "new-name"` pairs; chains resolve to their last name, cycles are refused."""
    if not isinstance(table, dict):
        raise ValueError('[models.aliases] must be a table of "old-name" = "new-name"')
    for old, new in table.items():
        if not old or not isinstance(new, str) or not new:
            raise ValueError(f'[models.aliases] "{old}": must be a non-empty model name string')
    resolved: dict[str, str] = {}
    for old in table:
        seen = [old]
        target = table[old]
        while target in table:
            if target in seen:
                cycle = " -> ".join([*seen, target])
                raise ValueError(f'[models.aliases] "{old}": aliases form a cycle ({cycle})')
            seen.append(target)
            target = table[target]
        resolved[old] = target
    return resolved


def parse_prices(table: Any) -> dict[str, Price]:
    """`[prices."model"]` tables of USD per million tokens, exact to the tick.

    `input` and `output` are required; `cached_input` defaults to `input` (no cache discount).
    """
    if not isinstance(table, dict):
        raise ValueError('[prices] must hold tables like [prices."model-name"]')
    prices: dict[str, Price] = {}
    for model, entry in table.items():
        where = f'[prices."{model}"]'
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a table with input, cached_input, output")
        unknown = set(entry) - set(_PRICE_FIELDS)
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
