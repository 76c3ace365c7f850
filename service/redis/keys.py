"""Every Redis key the gateway writes, named in one place.

All the keys of one tenant (or of one key without a tenant) carry the Cluster hash tag
`{t:<tenant>}` (or `{k:<key id>}`), so every script call touches a single slot. With the
default prefix `gw`:

    gw:{tag}:req:k:<key id>:<seconds>:<window>   int   the key's requests in a rate window
    gw:{tag}:req:t:<tenant>:<seconds>:<window>   int   its tenant's
    gw:{tag}:tok:k:<key id>:<seconds>:<window>   int   the key's tokens
    gw:{tag}:tok:t:<tenant>:<seconds>:<window>   int   its tenant's
    gw:{tag}:conc:<key id>                       zset  lease id -> expiry (ms)
    gw:{tag}:rel:<admission id>                  str   'a:<ms>' admitted, 'r' released,
                                                       'c' cancelled: each applies once
    gw:{tag}:led:<YYYY-MM-DD>:<key id>           hash  "<measure>|<model>" -> int (the ledger)
    gw:{tag}:models:<YYYY-MM-DD>                 set   the model names in the tenant's rows
    gw:{tag}:spend:k:<key id>:<day or month>     int   ticks the key spent
    gw:{tag}:sum:k:<key id>:<day or month>       hash  "<measure>" -> int: the key's sums
    gw:{tag}:sum:t:<tenant>:<day or month>       hash  the tenant's (all of its keys)
    gw:{tag}:resp:<response id>                  "1"   the tenant owns this Responses API id
    gw:{tag}:reads:<key id>:<unix second>        int   the key's usage reads that second
    gw:{tag}:holds                               hash  admission id -> "<ticks>|<key id>": spend
                                                       held by a request in flight
    gw:{tag}:holds:due                           zset  admission id -> when its hold lapses
    gw:{tag}:held                                hash  "k:<key id>" / "t" -> ticks held

The admin API's key store (`service.registry.store`) keeps its keys under one tag of its own,
`{keystore}` (no tenant's or key's tag can spell it), so its scripts run on one Cluster slot:

    gw:{keystore}:keys                           hash  key id -> the key's record (JSON, digests)
    gw:{keystore}:tenants                        hash  tenant -> its budgets (JSON)
    gw:{keystore}:version                        int   bumped by every write
    gw:{keystore}:audit                          list  audit records (JSON), newest first
    gw:{keystore}:changes                        channel  "<version> <key|tenant> <id>" per write

A window is `floor(now / seconds)` on Redis's clock; a day is `YYYY-MM-DD` and a month
`YYYY-MM`, in UTC. Measures are `service.usage.record.MEASURES`' codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

NO_TENANT = "-"  # the tenant of a key that has none, where a tenant is named


def owner_of(key_id: str, tenant: str | None) -> str:
    """Who owns what a key creates and counts: its tenant, or the key itself without one."""
    return f"t:{tenant}" if tenant else f"k:{key_id}"


@dataclass(frozen=True, slots=True)
class KeyNames:
    """The names (or the bases the scripts complete) of one key's counters."""

    prefix: str
    key_id: str
    tenant: str | None

    @property
    def tag(self) -> str:
        """`<prefix>:{<owner>}`: how every name of this key's tenant starts."""
        return f"{self.prefix}:{{{owner_of(self.key_id, self.tenant)}}}"

    def window(self, kind: str, scope: str, seconds: int) -> str:
        """A rate window's base (`:<window index>` follows): kind `req` or `tok`, scope
        `key` or `tenant`."""
        who = f"k:{self.key_id}" if scope == "key" else f"t:{self.tenant}"
        return f"{self.tag}:{kind}:{who}:{seconds}"

    @property
    def leases(self) -> str:
        return f"{self.tag}:conc:{self.key_id}"

    @property
    def markers(self) -> str:
        """The start of a marker's name; the admission id follows."""
        return f"{self.tag}:rel:"

    @property
    def ledger(self) -> str:
        """The start of the key's ledger rows; `:<day>:<key id>` follows."""
        return f"{self.tag}:led"

    @property
    def models(self) -> str:
        """The start of the set of model names a tenant's day has; `:<day>` follows."""
        return f"{self.tag}:models"

    @property
    def key_spend(self) -> str:
        return f"{self.tag}:spend:k:{self.key_id}"

    @property
    def key_sums(self) -> str:
        return f"{self.tag}:sum:k:{self.key_id}"

    @property
    def tenant_sums(self) -> str | None:
        return f"{self.tag}:sum:t:{self.tenant}" if self.tenant else None

    @property
    def responses(self) -> str:
        """The start of a response ownership key; the response id follows."""
        return f"{self.tag}:resp:"

    @property
    def holds(self) -> str:
        return f"{self.tag}:holds"

    @property
    def holds_due(self) -> str:
        return f"{self.tag}:holds:due"

    @property
    def held(self) -> str:
        return f"{self.tag}:held"

    @property
    def reads(self) -> str:
        return f"{self.tag}:reads:{self.key_id}"


def ledger_pattern(prefix: str, tenant: str | None = None, key: str | None = None) -> str:
    """A SCAN pattern for ledger rows, of one tenant (`-`: keys without one) or key."""
    owner = "*" if tenant is None else ("k:*" if tenant == NO_TENANT else f"t:{tenant}")
    return f"{prefix}:{{{owner}}}:led:*:{key or '*'}"


def parse_ledger_name(prefix: str, name: str) -> tuple[date, str, str] | None:
    """(day, tenant (`-` for none), key id) of a ledger row's name; None for other names."""
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


@dataclass(frozen=True, slots=True)
class StoreNames:
    """The names of the admin API's key store."""

    prefix: str = "gw"

    @property
    def tag(self) -> str:
        return f"{self.prefix}:{{keystore}}"

    @property
    def keys(self) -> str:
        return f"{self.tag}:keys"

    @property
    def tenants(self) -> str:
        return f"{self.tag}:tenants"

    @property
    def version(self) -> str:
        return f"{self.tag}:version"

    @property
    def audit(self) -> str:
        return f"{self.tag}:audit"

    @property
    def channel(self) -> str:
        return f"{self.tag}:changes"
