"""The usage ledger: per UTC day, tenant, key and model, the requests, tokens and cost.

The limiter's release writes it, in the same Redis script call that frees the request
(`limiter/lua/accounting.lua`; `MemoryLedger.add` without Redis). The admin usage route and
the `usage` command read it here, through a `Ledger`: rows from day `first` to `last`,
optionally of one tenant or key. Its Redis layout is in `service/redis/keys.py`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from service.redis.keys import NO_TENANT, ledger_pattern, parse_ledger_name
from service.usage.record import MEASURES, Totals

NO_MODEL = "-"  # the model column of a request that names none
OTHER_MODEL = "(other)"  # a refused or failed request's model, and a tenant's names past the cap
MODELS_PER_DAY = 100  # distinct model names a tenant's day keeps under their own name
MAX_MODEL_CHARS = 128  # requests are refused before that; the ledger cuts longer names too


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One ledger line: a day (UTC), tenant (`-` for none), key, model (`-` for none)."""

    day: date
    tenant: str
    key: str
    model: str
    totals: Totals


class LedgerUnavailable(Exception):
    """The ledger's store (Redis) cannot be reached: a replica's memory is no ledger."""


class Ledger(Protocol):
    def days(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> AsyncIterator[list[LedgerRow]]:
        """The rows from day `first` to `last` (UTC, inclusive), one day at a time, each
        day's sorted by tenant, key and model; of one tenant (`-`: the keys without one) or
        key when given. Raises LedgerUnavailable when its store cannot be read."""

    async def rows(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> list[LedgerRow]:
        """All of `days`' rows in one list (for small reads: tests, the command line)."""

    async def aclose(self) -> None: ...


async def all_rows(
    ledger: Ledger, first: date, last: date, tenant: str | None, key: str | None
) -> list[LedgerRow]:
    return [row async for day in ledger.days(first, last, tenant, key) for row in day]


def ledger_model(name: str | None) -> str:
    """The model column for a client-sent name: `-` for none, cut to MAX_MODEL_CHARS."""
    return name[:MAX_MODEL_CHARS] if name else NO_MODEL


class MemoryLedger:
    """The ledger of a gateway without Redis: this process's memory, pruned after
    `retention_days`."""

    def __init__(self, retention_days: int = 400) -> None:
        self.retention_days = retention_days
        self._rows: dict[tuple[date, str, str, str], Totals] = {}
        self._models: dict[tuple[date, str], set[str]] = {}  # (day, owner) -> model names

    def add(
        self, day: date, owner: str, tenant: str | None, key: str, model: str, totals: Totals
    ) -> None:
        """Add to a row; `owner` (the tenant, or a key without one) bounds its day's names."""
        if model not in (NO_MODEL, OTHER_MODEL):
            known = self._models.setdefault((day, owner), set())
            if model in known or len(known) < MODELS_PER_DAY:
                known.add(model)
            else:
                model = OTHER_MODEL
        row = (day, tenant or NO_TENANT, key, model)
        self._rows[row] = self._rows.get(row, Totals()) + totals

    def prune(self, today: date) -> None:
        oldest = today - timedelta(days=self.retention_days)
        for row in [r for r in self._rows if r[0] < oldest]:
            del self._rows[row]
        for day in [d for d in self._models if d[0] < today]:
            del self._models[day]

    async def days(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> AsyncIterator[list[LedgerRow]]:
        rows = [
            LedgerRow(*row, totals)
            for row, totals in sorted(self._rows.items())
            if first <= row[0] <= last
            and (tenant is None or row[1] == tenant)
            and (key is None or row[2] == key)
        ]
        for _, day in itertools.groupby(rows, key=lambda row: row.day):
            yield list(day)

    async def rows(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> list[LedgerRow]:
        return await all_rows(self, first, last, tenant, key)

    async def aclose(self) -> None:
        return None


class RedisLedger:
    """The ledger in Redis. Its rows' names are found with SCAN (operator reads, rare; on a
    Cluster, every master's keys in turn: each holds its own tenants') and only the names
    are held; the rows are then read a day at a
    time, in pipelined pages, so a long export holds one day's rows, not all of them.
    Owns its client: `aclose` closes it."""

    _PAGE = 100  # hashes a round trip: a page's parsing holds the event loop a few ms

    def __init__(self, redis: Redis, prefix: str = "gw") -> None:
        self.redis = redis
        self.prefix = prefix

    async def days(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> AsyncIterator[list[LedgerRow]]:
        try:
            # Bucketed by day as they come, each day sorted when it is read: one sort of every
            # name held the event loop for as long as the ledger is big.
            by_day: dict[date, list[tuple[tuple[date, str, str], str]]] = {}
            async for name, where in self._names(tenant, key):
                if first <= where[0] <= last:
                    by_day.setdefault(where[0], []).append((where, name))
            for day in sorted(by_day):
                yield await self._read(sorted(by_day.pop(day)))
        except (TimeoutError, RedisError, OSError) as exc:
            raise LedgerUnavailable(str(exc)) from exc

    async def rows(
        self, first: date, last: date, tenant: str | None = None, key: str | None = None
    ) -> list[LedgerRow]:
        return await all_rows(self, first, last, tenant, key)

    async def _read(self, named: list[tuple[tuple[date, str, str], str]]) -> list[LedgerRow]:
        """The rows of these hashes (one day's), read a page of hashes per round trip."""
        rows = []
        for start in range(0, len(named), self._PAGE):
            page = named[start : start + self._PAGE]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, name in page:
                    pipe.hgetall(name)
                hashes = await pipe.execute()
            for ((day, row_tenant, row_key), _), raw in zip(page, hashes, strict=True):
                for model, totals in sorted(per_model(raw)):
                    rows.append(LedgerRow(day, row_tenant, row_key, model, totals))
            await asyncio.sleep(0)  # other requests' turn between pages
        return rows

    async def _names(
        self, tenant: str | None, key: str | None
    ) -> AsyncIterator[tuple[str, tuple[date, str, str]]]:
        pattern = ledger_pattern(self.prefix, tenant, key)
        async for raw in self._scan(pattern):
            name = raw.decode() if isinstance(raw, bytes) else raw
            where = parse_ledger_name(self.prefix, name)
            if (
                where is not None
                and (tenant is None or where[1] == tenant)
                and (key is None or where[2] == key)
            ):
                yield name, where

    async def _scan(self, pattern: str) -> AsyncIterator[bytes | str]:
        """Every key matching `pattern`: of the one server, or of each Cluster master."""
        if not isinstance(self.redis, RedisCluster):
            async for name in self.redis.scan_iter(match=pattern, count=1000):
                yield name
            return
        await self.redis.initialize()  # the masters, known once the client has mapped them
        for master in self.redis.get_primaries():
            async for name in self.redis.scan_iter(match=pattern, count=1000, target_nodes=master):
                yield name

    async def aclose(self) -> None:
        await self.redis.aclose()


def per_model(raw: Mapping[bytes | str, bytes | str | int]) -> Iterator[tuple[str, Totals]]:
    """A ledger row's hash (`<measure>|<model>` -> count) as (model, Totals) pairs."""
    counts: dict[str, dict[str, int]] = {}
    for field, value in raw.items():
        text = field.decode() if isinstance(field, bytes) else field
        code, sep, model = text.partition("|")
        if sep and code in MEASURES:
            counts.setdefault(model, {})[code] = int(value)
    for model, by_code in counts.items():
        yield model, Totals.from_codes(by_code)
