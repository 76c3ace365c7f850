"""The registry in force: the key file's entries plus the admin API's, as one KeyRegistry.

The file wins: an API key whose id the file also defines is left out (with one warning per
id), and a file tenant's budgets are used over an API tenant's of the same name. API tenants'
budgets apply to every key of that tenant, file keys included, exactly as a file tenant's.

Building is incremental: each API key's entries (its secret, and a rotated-out secret in its
grace) are built once and kept until the key, the tenants or the file change, so a change to
one key among many costs a dict copy, not a rebuild (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

from service.limiter.policy import parse_rates, parse_spend
from service.registry.keys import ApiKey, KeyRegistry, key_policy
from service.registry.records import KeyRecord, TenantRecord
from service.registry.store import Snapshot

log = logging.getLogger("service.registry")


@functools.lru_cache(maxsize=4096)
def _rates(text: str) -> tuple:
    return parse_rates(text)


@functools.lru_cache(maxsize=1024)
def _spend(text: str) -> tuple:
    return parse_spend(text)


def parsed_limits(source: KeyRecord | TenantRecord) -> dict[str, Any]:
    """A record's limit fields parsed as the file's are (only those it sets)."""
    out: dict[str, Any] = {}
    for name in ("requests", "tokens"):
        value = getattr(source, name)
        if value is not None:
            out[name] = _rates(value)
    if source.spend is not None:
        out["spend"] = _spend(source.spend)
    if source.concurrent is not None:
        out["concurrent"] = source.concurrent
    return out


class MergedView:
    """The file's registry and the API's records; `build()` answers the merged registry."""

    def __init__(self, file: KeyRegistry) -> None:
        self.file = file
        self.version = 0  # the store's version these records are at
        self.keys: dict[str, KeyRecord] = {}
        self.tenants: dict[str, TenantRecord] = {}
        self._built: dict[str, tuple[ApiKey, ...]] = {}
        self._warned: set[str] = set()

    # --- changes ----------------------------------------------------------------------------

    def set_file(self, file: KeyRegistry) -> None:
        self.file = file
        self._built.clear()

    def load(self, snapshot: Snapshot) -> None:
        self.version = snapshot.version
        self.keys = dict(snapshot.keys)
        self.tenants = dict(snapshot.tenants)
        self._built.clear()

    def put_key(self, record: KeyRecord | None, key_id: str) -> None:
        """`record` in force for `key_id` (None: deleted)."""
        if record is None:
            self.keys.pop(key_id, None)
        else:
            self.keys[key_id] = record
        self._built.pop(key_id, None)

    def put_tenant(self, record: TenantRecord | None, tenant_id: str) -> None:
        if record is None:
            self.tenants.pop(tenant_id, None)
        else:
            self.tenants[tenant_id] = record
        self._built = {
            key_id: entries
            for key_id, entries in self._built.items()
            if self.keys[key_id].tenant != tenant_id
        }

    # --- what is in force -------------------------------------------------------------------

    def file_ids(self) -> set[str]:
        declared = self.file.declared
        return set(declared.raw_keys) | {admin.id for admin in self.file.admin_keys}

    def api_tenant_limits(self, tenant: str) -> dict[str, Any] | None:
        """An API tenant's parsed budgets, unless the file defines that tenant."""
        if tenant in self.file.declared.tenants:
            return None
        record = self.tenants.get(tenant)
        return parsed_limits(record) if record is not None else None

    def build(self) -> KeyRegistry:
        file = self.file
        taken = self.file_ids()
        entries: list[ApiKey] = []
        for key_id, record in self.keys.items():
            if key_id in taken:
                if key_id not in self._warned:
                    self._warned.add(key_id)
                    log.warning(
                        "key id %r is defined in the key file and through the admin API: "
                        "the file's entry is in force",
                        key_id,
                    )
                continue
            built = self._built.get(key_id)
            if built is None:
                built = self._built[key_id] = self._entries(record)
            entries.extend(built)
        file_keys = [self._file_key(key) for key in file.entries()]
        return file.with_keys(entries + file_keys)  # later entries win a digest: the file's

    def _file_key(self, key: ApiKey) -> ApiKey:
        """A file key, with its API tenant's budgets when the file does not define the tenant."""
        shared = self.api_tenant_limits(key.tenant) if key.tenant else None
        if not shared:
            return key
        policy = dataclasses.replace(
            key.policy,
            tenant_requests=shared.get("requests", ()),
            tenant_tokens=shared.get("tokens", ()),
            tenant_spend=shared.get("spend", ()),
        )
        return dataclasses.replace(key, policy=policy)

    def _entries(self, record: KeyRecord) -> tuple[ApiKey, ...]:
        declared = self.file.declared
        limits = {**declared.defaults, **parsed_limits(record)}
        shared = declared.tenants.get(record.tenant)
        if shared is None:
            shared = self.api_tenant_limits(record.tenant) or {}
        policy = key_policy(record.id, record.tenant, limits, shared)
        key = ApiKey(
            id=record.id,
            tenant=record.tenant,
            digest=record.digest,
            models=frozenset(record.models) if record.models is not None else None,
            policy=policy,
            disabled=record.disabled,
            expires_at=record.expires_at,
            gated=record.disabled or record.expires_at is not None,
        )
        if record.previous_digest is None or record.previous_expires_at is None:
            return (key,)
        previous = dataclasses.replace(
            key, digest=record.previous_digest, retired_at=record.previous_expires_at, gated=True
        )
        return (key, previous)
