"""The key registry: a TOML file of SHA-256 key digests, their tenants and their limits.

Loading validates everything and parses rate strings once, so a request only hashes its key
and looks the digest up. Errors name the file and the entry at fault.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from service.limiter.policy import LimitPolicy, parse_rates, parse_spend
from service.registry.models import ModelCatalog, parse_catalog
from service.registry.upstreams import (
    UpstreamConfigError,
    UpstreamSpec,
    check_pool_covers,
    parse_upstreams,
    tenant_upstreams,
)
from service.usage.prices import PriceTable, parse_prices

log = logging.getLogger("service.registry")

K = TypeVar("K", "ApiKey", "AdminKey")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LIMIT_FIELDS = {"requests", "tokens", "concurrent", "spend"}
_TENANT_FIELDS = {"requests", "tokens", "spend"}
_KEY_FIELDS = {"id", "tenant", "sha256", "models", "disabled", *_LIMIT_FIELDS}
_ADMIN_KEY_FIELDS = {"id", "sha256", "disabled", "read_only"}
_NAMED_AT_MOST = 50  # keys named in the no-limit warning; the count covers the rest
_SECTIONS = {"defaults", "tenants", "keys", "admin_keys", "models", "prices", "upstreams"}


class RegistryError(ValueError):
    """The key file is missing, unparsable or invalid; the message says where."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One tenant key, as the gateway knows it (never the secret itself)."""

    id: str
    tenant: str | None
    digest: str
    models: frozenset[str] | None
    policy: LimitPolicy
    # API keys only (`registry/store.py`): checked against the clock at each request, so a
    # replica needs no message to stop an expired key or a rotated-out secret.
    disabled: bool = False
    expires_at: float | None = None  # unix seconds; the key's own end
    retired_at: float | None = None  # a rotated-out secret's end of grace
    gated: bool = False  # any of the three is set: the auth path checks them

    def refusal(self, now: float) -> str | None:
        """Why this key's secret is refused at `now` (a 401's message), or None."""
        if self.retired_at is not None and now >= self.retired_at:
            return "Incorrect API key provided."
        if self.disabled:
            return "this key is disabled"
        if self.expires_at is not None and now >= self.expires_at:
            return f"this key expired at {rfc3339(self.expires_at)}"
        return None


@dataclass(frozen=True, slots=True)
class AdminKey:
    """An operator key for `/admin/v1`: no tenant, no budgets, and no access to `/api/v1`."""

    id: str
    digest: str
    read_only: bool = False  # may GET, gets 403 on writes


@dataclass(frozen=True, slots=True)
class FileLimits:
    """What the file declares, as written, for the admin API's answers and the merge."""

    defaults: dict[str, Any]  # parsed [defaults]
    tenants: dict[str, dict[str, Any]]  # parsed [tenants.*]
    raw_tenants: dict[str, dict[str, Any]]  # [tenants.*] as written
    raw_keys: dict[str, dict[str, Any]]  # [[keys]] as written (no sha256), disabled ones too


class KeyRegistry:
    """Immutable lookup from a presented secret to its ApiKey (or AdminKey)."""

    def __init__(
        self,
        keys: list[ApiKey],
        source: str = "",
        models: ModelCatalog | None = None,
        prices: PriceTable | None = None,
        admin_keys: list[AdminKey] | None = None,
        declared: FileLimits | None = None,
        upstreams: tuple[UpstreamSpec, ...] = (),
        tenant_upstreams: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.source = source
        self.declared = declared or FileLimits({}, {}, {}, {})
        self.upstreams = upstreams  # the file's [[upstreams]]; none: the one from XAI_*
        self.tenant_upstreams = tenant_upstreams or {}  # tenant -> the upstreams it may use
        self.models = models or ModelCatalog()
        self.prices: PriceTable = prices or {}  # the file's [prices], for usage.charge
        self._by_digest = {key.digest: key for key in keys}
        self._admin_by_digest = {key.digest: key for key in admin_keys or ()}
        self.admin_keys = list(admin_keys or ())

    def __len__(self) -> int:
        return len(self._by_digest)

    def entries(self) -> list[ApiKey]:
        """Every tenant key's entry (for operators' reads, never per request)."""
        return list(self._by_digest.values())

    def with_keys(self, keys: list[ApiKey]) -> KeyRegistry:
        """This registry with `keys` as its tenant keys; all else (admin keys, models,
        prices, what the file declares) is this one's. Later keys win a shared digest."""
        merged = copy.copy(self)
        merged._by_digest = {key.digest: key for key in keys}
        return merged

    def lookup(self, secret: str) -> ApiKey | None:
        """The tenant key whose digest matches `secret`, or None (unknown, admin, disabled in
        the file). An API key may be gated: `ApiKey.refusal` says whether it serves now."""
        return _find(self._by_digest, secret)

    def lookup_admin(self, secret: str) -> AdminKey | None:
        """The admin key whose digest matches `secret`, or None (unknown, disabled, tenant)."""
        return _find(self._admin_by_digest, secret)


def _find(by_digest: dict[str, K], secret: str) -> K | None:
    digest = hash_key(secret)
    # The dict finds the candidate by digest (timing there reveals nothing about the
    # secret: SHA-256 preimages are out of reach); the final check is constant-time.
    key = by_digest.get(digest)
    if key is not None and hmac.compare_digest(key.digest, digest):
        return key
    return None


def rfc3339(seconds: float) -> str:
    """Unix seconds as an RFC 3339 UTC string: `2026-12-08T02:48:54Z` (milliseconds if any)."""
    whole = int(seconds)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    millis = int((seconds - whole) * 1000)
    return f"{stamp}.{millis:03d}Z" if millis else f"{stamp}Z"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


ADMIN_KEY_PREFIX = "gk-admin-"  # tells a leaked admin key from a tenant key at a glance


def new_key_secret(prefix: str = "gk-") -> str:
    """A fresh random key string: `prefix` and 256 bits of URL-safe randomness."""
    return prefix + secrets.token_urlsafe(32)


def load_registry(path: str | Path) -> KeyRegistry:
    """Read and validate the key file. Raises RegistryError naming the file and entry."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read key file: {exc.strerror or exc}") from None
    return parse_registry(raw, source=str(path))


def parse_registry(
    raw: bytes, source: str = "<keys>", env: Mapping[str, str] | None = None
) -> KeyRegistry:
    """Parse and validate a key file's content; logs a warning naming keys without limits.
    `env` (the process's environment by default) holds the upstreams' keys."""
    try:
        # Decimal, not float: prices are money and must read exactly as written.
        doc = tomllib.loads(raw.decode("utf-8"), parse_float=Decimal)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(doc) - _SECTIONS
    if unknown:
        raise RegistryError(f"{source}: unknown section(s) {sorted(unknown)}")

    defaults = _limits(_table(doc, "defaults", source), f"{source} [defaults]")
    try:
        upstreams = parse_upstreams(
            doc.get("upstreams", []), source, os.environ if env is None else env
        )
    except UpstreamConfigError as exc:
        raise RegistryError(str(exc)) from None
    tenants = {}
    raw_tenants = {}
    routes: dict[str, tuple[str, ...]] = {}  # tenant -> its upstreams
    for name, table in _table(doc, "tenants", source).items():
        where = f"{source} [tenants.{name}]"
        if not isinstance(table, dict):
            raise RegistryError(f"{where}: must be a table")
        if set(table) - _TENANT_FIELDS - {"upstreams"}:
            raise RegistryError(
                f"{where}: only {', '.join(sorted(_TENANT_FIELDS))} and upstreams are allowed "
                "for a tenant"
            )
        tenants[name] = _limits(table, where)
        raw_tenants[name] = dict(table)
        if "upstreams" in table:
            try:
                routes[name] = tenant_upstreams(table["upstreams"], where, upstreams)
            except UpstreamConfigError as exc:
                raise RegistryError(str(exc)) from None

    entries = doc.get("keys", [])
    if not isinstance(entries, list):
        raise RegistryError(f"{source}: 'keys' must be an array of tables ([[keys]])")
    keys: list[ApiKey] = []
    seen_ids: set[str] = set()
    seen_digests: set[str] = set()
    raw_keys: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        key = _parse_key(entry, index, source, defaults, tenants)
        if key is None:  # disabled in the file: its id stays taken
            raw_keys.setdefault(entry["id"], {k: v for k, v in entry.items() if k != "sha256"})
            continue
        if key.id in seen_ids:
            raise RegistryError(f"{source}: keys[{index}]: duplicate id {key.id!r}")
        if key.digest in seen_digests:
            raise RegistryError(f"{source}: keys[{index}] ({key.id}): duplicate sha256")
        seen_ids.add(key.id)
        seen_digests.add(key.digest)
        keys.append(key)
        raw_keys[key.id] = {k: v for k, v in entry.items() if k != "sha256"}
    admin_keys = _parse_admin_keys(doc.get("admin_keys", []), source, seen_ids, seen_digests)
    try:
        catalog = parse_catalog(doc.get("models"))
        prices = parse_prices(doc.get("prices"), catalog.aliases)
    except ValueError as exc:
        raise RegistryError(f"{source}: {exc}") from None
    try:
        check_pool_covers(upstreams, routes, keys)
    except UpstreamConfigError as exc:
        raise RegistryError(f"{source}: {exc}") from None
    _warn_unlimited(keys, source)
    declared = FileLimits(defaults, tenants, raw_tenants, raw_keys)
    return KeyRegistry(
        keys,
        source,
        models=catalog,
        prices=prices,
        admin_keys=admin_keys,
        declared=declared,
        upstreams=upstreams,
        tenant_upstreams=routes,
    )


def _entry_id(entry: Any, where: str) -> tuple[str, str]:
    """A `[[keys]]` or `[[admin_keys]]` entry's id, and where it is for error messages."""
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: must be a table")
    key_id = entry.get("id")
    if not isinstance(key_id, str) or not _ID.match(key_id):
        raise RegistryError(f"{where}: id must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return key_id, f"{where} ({key_id})"


def _digest(entry: dict[str, Any], where: str) -> str:
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
        raise RegistryError(f"{where}: sha256 must be 64 hex characters (the key's SHA-256)")
    return digest


def _parse_admin_keys(
    entries: Any, source: str, seen_ids: set[str], seen_digests: set[str]
) -> list[AdminKey]:
    """`[[admin_keys]]` entries; ids and digests unique across tenant and admin keys."""
    if not isinstance(entries, list):
        raise RegistryError(f"{source}: 'admin_keys' must be an array of tables ([[admin_keys]])")
    admin_keys = []
    for index, entry in enumerate(entries):
        key_id, where = _entry_id(entry, f"{source}: admin_keys[{index}]")
        unknown = set(entry) - _ADMIN_KEY_FIELDS
        if unknown:
            raise RegistryError(
                f"{where}: unknown field(s) {sorted(unknown)}; an admin key has only "
                "id, sha256, disabled and read_only (no tenant, no limits)"
            )
        digest = _digest(entry, where)
        disabled = entry.get("disabled", False)
        if not isinstance(disabled, bool):
            raise RegistryError(f"{where}: disabled must be true or false")
        read_only = entry.get("read_only", False)
        if not isinstance(read_only, bool):
            raise RegistryError(f"{where}: read_only must be true or false")
        digest = digest.lower()
        if key_id in seen_ids:
            raise RegistryError(f"{where}: duplicate id {key_id!r} (ids are unique across keys)")
        if digest in seen_digests:
            raise RegistryError(f"{where}: duplicate sha256 (a key is a tenant or an admin key)")
        seen_ids.add(key_id)
        seen_digests.add(digest)
        if not disabled:
            admin_keys.append(AdminKey(id=key_id, digest=digest, read_only=read_only))
    return admin_keys


def _warn_unlimited(keys: list[ApiKey], source: str) -> None:
    """Name the keys with no request limit at any level (own, [defaults], tenant)."""
    unlimited = [k.id for k in keys if not k.policy.requests and not k.policy.tenant_requests]
    if unlimited:
        named = ", ".join(unlimited[:_NAMED_AT_MOST])
        if len(unlimited) > _NAMED_AT_MOST:
            named += f" and {len(unlimited) - _NAMED_AT_MOST} more"
        log.warning(
            "%s: %d key(s) have no request limit at any level (own, [defaults] or tenant), "
            "so nothing caps their request rate: %s",
            source,
            len(unlimited),
            named,
        )


def _table(doc: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise RegistryError(f"{source}: [{name}] must be a table")
    return value


def _limits(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate and parse the limit fields present in `table`."""
    parsed: dict[str, Any] = {}
    for name in ("requests", "tokens"):
        if name in table:
            try:
                parsed[name] = parse_rates(table[name])
            except ValueError as exc:
                raise RegistryError(f"{where}: {name}: {exc}") from None
    if "spend" in table:
        try:
            parsed["spend"] = parse_spend(table["spend"])
        except ValueError as exc:
            raise RegistryError(f"{where}: spend: {exc}") from None
    if "concurrent" in table:
        value = table["concurrent"]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise RegistryError(f"{where}: concurrent must be a positive integer")
        parsed["concurrent"] = value
    return parsed


def _parse_key(
    entry: Any,
    index: int,
    source: str,
    defaults: dict[str, Any],
    tenants: dict[str, dict[str, Any]],
) -> ApiKey | None:
    key_id, where = _entry_id(entry, f"{source}: keys[{index}]")
    unknown = set(entry) - _KEY_FIELDS
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)}")
    digest = _digest(entry, where)
    tenant = entry.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not _ID.match(tenant)):
        raise RegistryError(f"{where}: tenant must be 1-64 characters of A-Z a-z 0-9 . _ -")
    models = entry.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)
    ):
        raise RegistryError(f"{where}: models must be a list of model names")
    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool):
        raise RegistryError(f"{where}: disabled must be true or false")
    own = _limits(entry, where)
    if disabled:
        return None
    limits = {**defaults, **own}
    policy = key_policy(key_id, tenant, limits, tenants.get(tenant, {}) if tenant else {})
    return ApiKey(
        id=key_id,
        tenant=tenant,
        digest=digest.lower(),
        models=frozenset(models) if models is not None else None,
        policy=policy,
    )


def key_policy(
    key_id: str, tenant: str | None, limits: dict[str, Any], shared: dict[str, Any]
) -> LimitPolicy:
    """A key's policy from its parsed limits (defaults applied) and its tenant's (`shared`):
    the one place a file key and an API key become limits."""
    return LimitPolicy(
        key_id=key_id,
        tenant=tenant,
        requests=limits.get("requests", ()),
        tenant_requests=shared.get("requests", ()),
        tokens=limits.get("tokens", ()),
        concurrent=limits.get("concurrent"),
        spend=limits.get("spend", ()),
        tenant_tokens=shared.get("tokens", ()),
        tenant_spend=shared.get("spend", ()),
    )
