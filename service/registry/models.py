"""Model names and prices from the key file: `[models.aliases]` and `[prices."model"]`.

Models are retired upstream; an alias rewrites the name a client sends into the one the
upstream serves. Allow-lists, logs and the ledger keep the client's name; prices are looked
up by the upstream's (aliased) name. Hot-reloaded with the key file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service.usage.cost import Price, cost_ticks
from service.usage.record import Usage


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
