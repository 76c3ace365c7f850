"""Model names from the key file: `[models.aliases]`.

Models are retired upstream; an alias rewrites the name a client sends into the one the
upstream serves. Allow-lists, logs and the ledger keep the client's name; prices
(`service/usage/prices.py`) are looked up by the upstream's name. Hot-reloaded with the key
file. The parsers raise ValueError naming the entry; the key-file loader adds the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    aliases: Mapping[str, str] = field(default_factory=dict)

    def upstream_name(self, model: str) -> str:
        """The model name to send upstream for the one the client asked for."""
        return self.aliases.get(model, model)


def parse_catalog(models: Any) -> ModelCatalog:
    """The catalog of the key file's `[models]` table (absent: no aliases)."""
    if models is None:
        models = {}
    if not isinstance(models, dict):
        raise ValueError("[models] must be a table")
    unknown = set(models) - {"aliases"}
    if unknown:
        raise ValueError(f"[models]: unknown field(s) {sorted(unknown)}; only [models.aliases]")
    return ModelCatalog(aliases=parse_aliases(models.get("aliases", {})))


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
