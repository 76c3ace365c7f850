"""The usage ledger and budget state: the types the limiter answers with, and where they live.

Every admitted request adds one row's worth to the ledger when it is released: per UTC day
(Redis's clock), tenant, key and model (the name the client sent), the requests, tokens and
cost in ticks. The limiter's stores write it (`limiter/redis_store.py` in the release
script, `limiter/memory_store.py` without Redis); the usage endpoints read it through
`Limiter.usage_snapshot` and `Limiter.ledger_rows`.

Redis layout. Every key of one tenant (or of one key without a tenant) carries the hash tag
`{t:<tenant>}` (or `{k:<key id>}`), so one script touches one Cluster slot. With the default
prefix `gw`:

    gw:{tag}:led:<YYYY-MM-DD>:<key id>      hash  "<measure>|<model>" -> int  (the ledger)
    gw:{tag}:spend:k:<key id>:<YYYY-MM-DD>  int   ticks the key spent that day
    gw:{tag}:spend:k:<key id>:<YYYY-MM>     int   ticks the key spent that month
    gw:{tag}:sum:k:<key id>:<YYYY-MM-DD>    hash  "<measure>" -> int: the key's day
    gw:{tag}:sum:k:<key id>:<YYYY-MM>       hash  the key's month
    gw:{tag}:sum:t:<tenant>:<YYYY-MM-DD>    hash  "<measure>" -> int: the tenant's day
    gw:{tag}:sum:t:<tenant>:<YYYY-MM>       hash  the tenant's month (all of its keys)
    gw:{tag}:resp:<response id>             "1"   the tenant owns this Responses API id
    gw:{tag}:reads:<key id>:<unix second>   int   the key's usage reads in that second

Measures: `r` requests, `i` input tokens, `c` cached input tokens, `o` output tokens, `x`
reasoning tokens, `$` cost in ticks (1 USD = 10^10). Ledger rows live USAGE_RETENTION_DAYS
after their day, spend counters and sums one day after their period, ownership 30 days.
Spend budgets read a key's counters and a tenant's `$`; the usage answer reads the key's and
the tenant's sums, never the ledger rows, so its cost in Redis does not grow with the ledger.
The rate windows, concurrency leases and release markers are described in `limiter/plan.py`
and `limiter/redis_store.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from service.usage.record import Charge

NO_TENANT = "-"  # the tenant column of a key without a tenant
NO_MODEL = "-"  # the model column of a request that names none
MAX_MODEL_CHARS = 128  # longer client-sent names are cut: the ledger is not a free store
MAX_RESPONSE_ID_CHARS = 256  # longer ids are never recorded, so never owned
MEASURES = ("r", "i", "c", "o", "x", "$")  # Redis field codes, in Totals' field order
RESPONSE_SECONDS = 30 * 86400  # ownership of a response id lasts as long as xAI keeps it


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over admitted requests: counts and tokens, cost in integer ticks."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_ticks: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cost_ticks + other.cost_ticks,
        )

    def values(self) -> tuple[int, ...]:
        """The six measures, in field (and MEASURES) order."""
        return (
            self.requests,
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.cost_ticks,
        )

    @classmethod
    def of(cls, charge: Charge) -> Totals:
        """One released request's contribution."""
        usage = charge.usage
        return cls(
            1,
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
            charge.cost_ticks,
        )

    @classmethod
    def from_measures(cls, measures: Mapping[str, int]) -> Totals:
        """From a sum hash's fields (measure code -> count); absent codes are 0."""
        return cls(*(int(measures.get(code, 0)) for code in MEASURES))


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One ledger line: a day (UTC), tenant (`-` for none), key, model (`-` for none)."""

    day: date
    tenant: str
    key: str
    model: str
    totals: Totals


@dataclass(frozen=True, slots=True)
class LimitState:
    """Where one budget stands now. Spend in ticks; concurrency has no window or reset."""

    scope: str  # "key" or "tenant"
    kind: str  # "requests", "tokens", "spend" or "concurrent"
    window: str | None  # "1 minute", "1 day"... for rates; "day" or "month" for spend
    limit: int
    remaining: int
    reset_seconds: float | None


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """A key's budgets and usage (today and this month, UTC), read without spending any."""

    limits: list[LimitState]
    key_today: Totals
    key_month: Totals
    tenant_today: Totals | None  # None for a key without a tenant
    tenant_month: Totals | None


def ledger_model(name: str | None) -> str:
    """The model column for a client-sent name: `-` for none, cut to MAX_MODEL_CHARS."""
    return name[:MAX_MODEL_CHARS] if name else NO_MODEL


def owner_of(key_id: str, tenant: str | None) -> str:
    """Who owns what a key creates: its tenant, or the key itself without one."""
    return f"t:{tenant}" if tenant else f"k:{key_id}"


def tag_base(prefix: str, key_id: str, tenant: str | None) -> str:
    """`<prefix>:{<owner>}`: the start of every Redis key of this key's tenant."""
    return f"{prefix}:{{{owner_of(key_id, tenant)}}}"


def parse_ledger_name(prefix: str, name: str) -> tuple[date, str, str] | None:
    """(day, tenant, key id) of a ledger hash's name; None for any other name."""
    head = f"{prefix}:{{"
    if not name.startswith(head):
        return None
    owner, sep, rest = name[len(head) :].partition("}:led:")
    day_text, _, key_id = rest.partition(":")
    if not sep or not key_id or owner[:2] not in ("t:", "k:"):
        return None
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        return None
    return day, owner[2:] if owner.startswith("t:") else NO_TENANT, key_id


def parse_ledger_fields(raw: Mapping[bytes | str, bytes | str | int]) -> dict[str, Totals]:
    """A ledger hash (`<measure>|<model>` -> count) as Totals per model."""
    per_model: dict[str, dict[str, int]] = {}
    for field, value in raw.items():
        text = field.decode() if isinstance(field, bytes) else field
        code, sep, model = text.partition("|")
        if sep and code in MEASURES:
            per_model.setdefault(model, {})[code] = int(value)
    return {model: Totals.from_measures(m) for model, m in per_model.items()}


def measures_of(raw: Mapping[bytes | str, bytes | str | int] | list) -> Totals:
    """A sum hash as Totals, from HGETALL's mapping or its flat [field, value, ...] list."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    measures = {}
    for field, value in raw.items():
        measures[field.decode() if isinstance(field, bytes) else field] = int(value)
    return Totals.from_measures(measures)
