"""The key file's `[[upstreams]]` and each tenant's `upstreams` list, validated with the file.

An upstream is a name, a base URL, the environment variable that holds its xAI key (never a
key in the file) and whether it is in the default pool. A file without `[[upstreams]]` has
one, `default`, from XAI_BASE_URL and XAI_API_KEY (built by the pool, not here). Errors are
one line naming the file and the entry, so a bad reference stops start-up or a reload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_UPSTREAM = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIELDS = {"name", "base_url", "api_key_env", "pool"}


class UpstreamConfigError(ValueError):
    """An `[[upstreams]]` entry or a tenant's `upstreams` is invalid; the message says which."""


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One upstream as the key file names it, with its key read from the environment."""

    name: str
    base_url: str
    api_key_env: str
    pool: bool = True
    api_key: str = field(default="", repr=False)  # the secret: never logged


def parse_upstreams(entries: Any, source: str, env: Mapping[str, str]) -> tuple[UpstreamSpec, ...]:
    """The file's `[[upstreams]]`, each key read from `env` (a missing variable is an error)."""
    if not isinstance(entries, list):
        raise UpstreamConfigError(f"{source}: 'upstreams' must be an array of tables")
    specs: list[UpstreamSpec] = []
    for index, entry in enumerate(entries):
        where = f"{source}: upstreams[{index}]"
        if not isinstance(entry, dict):
            raise UpstreamConfigError(f"{where}: must be a table")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise UpstreamConfigError(f"{where}: name must be 1-64 characters of A-Z a-z 0-9 . _ -")
        where = f"{where} ({name})"
        unknown = set(entry) - _FIELDS
        if unknown:
            raise UpstreamConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        if any(spec.name == name for spec in specs):
            raise UpstreamConfigError(f"{where}: duplicate name {name!r}")
        base_url = entry.get("base_url")
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise UpstreamConfigError(f"{where}: base_url must be an http:// or https:// URL")
        variable = entry.get("api_key_env")
        if not isinstance(variable, str) or not _ENV_NAME.match(variable):
            raise UpstreamConfigError(f"{where}: api_key_env must name an environment variable")
        key = env.get(variable, "").strip()
        if not key:
            raise UpstreamConfigError(f"{where}: environment variable {variable} is not set")
        pool = entry.get("pool", True)
        if not isinstance(pool, bool):
            raise UpstreamConfigError(f"{where}: pool must be true or false")
        specs.append(UpstreamSpec(name, base_url.rstrip("/"), variable, pool, key))
    return tuple(specs)


def tenant_upstreams(value: Any, where: str, specs: tuple[UpstreamSpec, ...]) -> tuple[str, ...]:
    """A tenant's `upstreams` list: names of upstreams the file defines (or `default`)."""
    known = {spec.name for spec in specs} if specs else {DEFAULT_UPSTREAM}
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise UpstreamConfigError(f"{where}: upstreams must be a list of upstream names")
    if not value:
        raise UpstreamConfigError(f"{where}: upstreams is empty; name at least one upstream")
    for name in value:
        if name not in known:
            raise UpstreamConfigError(
                f"{where}: upstreams names {name!r}, which no [[upstreams]] entry defines"
            )
    return tuple(dict.fromkeys(value))


def check_pool_covers(
    specs: tuple[UpstreamSpec, ...], tenants: Mapping[str, tuple[str, ...]], keys: list[Any]
) -> None:
    """Every key must reach an upstream: a key whose tenant names none uses the default pool,
    which must not be empty."""
    if not specs or any(spec.pool for spec in specs):
        return
    for key in keys:
        if key.tenant not in tenants:
            raise UpstreamConfigError(
                f"key {key.id!r}: its tenant names no upstreams and no [[upstreams]] entry has "
                "pool = true"
            )
