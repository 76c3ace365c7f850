"""Keys and tenants made through the admin API: their stored form and the checks on input.

A record holds what the store keeps (digests, never secrets) as JSON text; the admin routes
turn request bodies into records here, so every rule of SPEC 10 on input lives in one place
and is tested without a server. Times are unix seconds; answers spell them in RFC 3339.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from service.limiter.policy import parse_rates, parse_spend
from service.registry.keys import rfc3339

ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MODEL = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
LIMIT_FIELDS = ("requests", "tokens", "concurrent", "spend")
KEY_CREATE_FIELDS = {"id", "tenant", *LIMIT_FIELDS, "models", "expires_at", "metadata"}
KEY_UPDATE_FIELDS = {*LIMIT_FIELDS, "models", "expires_at", "disabled", "metadata"}
TENANT_FIELDS = set(LIMIT_FIELDS)
MAX_METADATA = 16
MAX_METADATA_NAME = 64
MAX_METADATA_VALUE = 512
MAX_MODELS = 256
GRACE_DEFAULT = 3600
GRACE_MAX = 604800  # a week
_YEAR_10000 = 253402300800  # unix seconds


class InvalidInput(ValueError):
    """A body or parameter breaks a rule; `param` names the field (a 400's `param`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One API key as the store keeps it."""

    id: str
    tenant: str
    digest: str
    created_at: float
    expires_at: float | None = None
    disabled: bool = False
    requests: str | None = None
    tokens: str | None = None
    concurrent: int | None = None
    spend: str | None = None
    models: tuple[str, ...] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    previous_digest: str | None = None  # the rotated-out secret's, valid until...
    previous_expires_at: float | None = None

    def dumps(self) -> str:
        data = asdict(self)
        if self.models is not None:
            data["models"] = list(self.models)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> KeyRecord:
        data = json.loads(text)
        if data.get("models") is not None:
            data["models"] = tuple(data["models"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """One tenant's budgets as the store keeps them."""

    id: str
    requests: str | None = None
    tokens: str | None = None
    spend: str | None = None
    concurrent: int | None = None

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> TenantRecord:
        return cls(**json.loads(text))


# --- answers --------------------------------------------------------------------------------


def key_object(
    record: KeyRecord | None = None, *, file_id: str = "", file_entry: dict | None = None
) -> dict[str, Any]:
    """The key object of SPEC 10 for an API record or a file entry (never a digest)."""
    if record is not None:
        return {
            "object": "key",
            "id": record.id,
            "tenant": record.tenant,
            "source": "api",
            "created_at": rfc3339(record.created_at),
            "expires_at": _time(record.expires_at),
            "disabled": record.disabled,
            "requests": record.requests,
            "tokens": record.tokens,
            "concurrent": record.concurrent,
            "spend": record.spend,
            "models": list(record.models) if record.models is not None else None,
            "metadata": dict(record.metadata),
        }
    entry = file_entry or {}
    models = entry.get("models")
    return {
        "object": "key",
        "id": file_id,
        "tenant": entry.get("tenant"),
        "source": "file",
        "created_at": None,
        "expires_at": None,
        "disabled": bool(entry.get("disabled", False)),
        "requests": entry.get("requests"),
        "tokens": entry.get("tokens"),
        "concurrent": entry.get("concurrent"),
        "spend": entry.get("spend"),
        "models": list(models) if models is not None else None,
        "metadata": {},
    }


def tenant_object(tenant_id: str, source: str, limits: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "tenant",
        "id": tenant_id,
        "source": source,
        **{name: limits.get(name) for name in ("requests", "tokens", "spend", "concurrent")},
    }


def _time(seconds: float | None) -> str | None:
    return None if seconds is None else rfc3339(seconds)


# --- input ----------------------------------------------------------------------------------


def check_id(value: Any, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value) or set(value) == {"."}:
        raise InvalidInput(
            f"'{what}' must be 1-64 characters of A-Z a-z 0-9 . _ - (and not only dots).", what
        )
    return value


def _no_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            f"Unknown field(s) {', '.join(repr(u) for u in unknown)}; allowed: "
            f"{', '.join(sorted(allowed))}.",
            unknown[0],
        )


def _limit(name: str, value: Any) -> Any:
    """A limit field's value as stored: a checked rate string, spend string or integer."""
    if value is None:
        return None
    if name == "concurrent":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1_000_000:
            raise InvalidInput("'concurrent' must be an integer from 1 to 1000000.", name)
        return value
    if not isinstance(value, str) or len(value) > 200:
        raise InvalidInput(f"'{name}' must be a string like '600/minute;10000/day'.", name)
    try:
        parse_spend(value) if name == "spend" else parse_rates(value)
    except ValueError as exc:
        raise InvalidInput(f"'{name}': {exc}", name) from None
    return value


def _models(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > MAX_MODELS
        or not all(isinstance(m, str) and _MODEL.match(m) for m in value)
    ):
        raise InvalidInput(
            f"'models' must be a list of at most {MAX_MODELS} model names "
            "(1-128 characters of A-Z a-z 0-9 . _ : / -).",
            "models",
        )
    return tuple(dict.fromkeys(value))


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > MAX_METADATA
        or not all(
            isinstance(v, str) and len(v) <= MAX_METADATA_VALUE and 0 < len(k) <= MAX_METADATA_NAME
            for k, v in value.items()
        )
    ):
        raise InvalidInput(
            f"'metadata' must be a flat object of at most {MAX_METADATA} string values "
            f"(names 1-{MAX_METADATA_NAME} characters, values at most {MAX_METADATA_VALUE}).",
            "metadata",
        )
    return dict(value)


def parse_time(value: Any, name: str = "expires_at") -> float | None:
    """An RFC 3339 time with its offset (`2027-01-01T00:00:00Z`) as unix seconds."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidInput(f"'{name}' must be an RFC 3339 time such as 2027-01-31T00:00:00Z.", name)
    try:
        moment = datetime.fromisoformat(value)
        seconds = moment.astimezone(UTC).timestamp() if moment.tzinfo is not None else None
    except (ValueError, OverflowError):  # not a time, or past year 9999 once in UTC
        seconds = None
    if seconds is None or "T" not in value.upper() or not 0 <= seconds < _YEAR_10000:
        raise InvalidInput(
            f"'{name}' must be an RFC 3339 time with its offset, such as 2027-01-31T00:00:00Z, "
            "from 1970 to 9999.",
            name,
        )
    return seconds


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The checked values of the fields present in `body`, in their stored form."""
    out: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        if name in body:
            out[name] = _limit(name, body[name])
    if "models" in body:
        out["models"] = _models(body["models"])
    if "expires_at" in body:
        out["expires_at"] = parse_time(body["expires_at"])
    if "metadata" in body:
        out["metadata"] = _metadata(body["metadata"])
    if "disabled" in body:
        if body["disabled"] is not None and not isinstance(body["disabled"], bool):
            raise InvalidInput("'disabled' must be true or false.", "disabled")
        out["disabled"] = body["disabled"] is True
    return out


@dataclass(frozen=True, slots=True)
class NewKey:
    """A checked create request: the id (None: the gateway makes one) and the fields."""

    id: str | None
    tenant: str
    fields: dict[str, Any]

    def record(self, key_id: str, digest: str, now: float) -> KeyRecord:
        return KeyRecord(
            id=key_id, tenant=self.tenant, digest=digest, created_at=now, **self.fields
        )


def parse_create(body: dict[str, Any]) -> NewKey:
    _no_unknown(body, KEY_CREATE_FIELDS)
    key_id = check_id(body["id"]) if body.get("id") is not None else None
    if "tenant" not in body:
        raise InvalidInput("'tenant' is required: the tenant the key belongs to.", "tenant")
    tenant = check_id(body["tenant"], "tenant")
    return NewKey(key_id, tenant, _fields(body))


def parse_update(body: dict[str, Any]) -> dict[str, Any]:
    """The fields a PATCH changes (null removes a field: back to the defaults)."""
    _no_unknown(body, KEY_UPDATE_FIELDS)
    return _fields(body)


def apply_update(record: KeyRecord, changes: dict[str, Any]) -> KeyRecord:
    return replace(record, **changes)


def parse_rotate(body: dict[str, Any]) -> int:
    """The grace in seconds during which the rotated-out secret still works."""
    _no_unknown(body, {"grace_seconds"})
    grace = body.get("grace_seconds", GRACE_DEFAULT)
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= GRACE_MAX:
        raise InvalidInput(
            f"'grace_seconds' must be an integer from 0 to {GRACE_MAX}.", "grace_seconds"
        )
    return grace


def rotate(record: KeyRecord, digest: str, grace: int, now: float) -> KeyRecord:
    """The record with a new secret's digest; the old one works until `now + grace`.

    A previous secret still in its grace is dropped: only the last one is kept.
    """
    if grace == 0:
        return replace(record, digest=digest, previous_digest=None, previous_expires_at=None)
    return replace(
        record, digest=digest, previous_digest=record.digest, previous_expires_at=now + grace
    )


def parse_tenant(tenant_id: str, body: dict[str, Any]) -> TenantRecord:
    _no_unknown(body, TENANT_FIELDS)
    if body.get("concurrent") is not None:
        # The limiter caps requests in flight per key, not per tenant (file tenants have no
        # such cap either): refused rather than stored and not enforced.
        raise InvalidInput(
            "A tenant-wide 'concurrent' cap is not supported; set 'concurrent' on its keys.",
            "concurrent",
        )
    return TenantRecord(id=tenant_id, **{k: _limit(k, body.get(k)) for k in LIMIT_FIELDS})
