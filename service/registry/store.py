"""Where the admin API's keys and tenants live: Redis when REDIS_URL is set, else memory.

One small interface, two implementations. Every write is one atomic step (a Lua script in
Redis): check, change the record, bump the version, append the audit record, and publish
`"<version> <kind> <id>"` so every replica reloads that one record. The version lets a
replica that missed a message see that it did (`registry/follow.py`).

Only digests are stored; a secret never reaches the store. Owned by `StoreFollower`, which
the app's lifespan starts and closes.
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.redis.keys import StoreNames
from service.registry.records import KeyRecord, TenantRecord

AUDIT_KEPT = 10_000  # audit records kept; the oldest are dropped past it


class StoreUnavailable(Exception):
    """The store (Redis) cannot be reached: admin writes answer 503 `store_unavailable`."""


class WriteRefused(Exception):
    """A write's precondition failed: `reason` is `exists`, `missing` or `changed`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Write:
    """One change: `kind` "key" or "tenant"; `op` "create" (must not exist), "replace"
    (must still hold `expected`), "put" (either way) or "delete" (must exist)."""

    kind: str
    id: str
    op: str
    value: str | None = None
    expected: str | None = None


@dataclass(slots=True)
class Snapshot:
    version: int = 0
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    tenants: dict[str, TenantRecord] = field(default_factory=dict)


class KeyStore(Protocol):
    shared: bool  # other replicas see its writes (and must be told of them)

    async def snapshot(self) -> Snapshot: ...

    async def version(self) -> int: ...

    async def read(self, kind: str, item_id: str) -> str | None: ...

    async def write(self, change: Write, audit: dict[str, Any]) -> int: ...

    async def audit(self, limit: int) -> list[dict[str, Any]]: ...

    def notices(self) -> AsyncIterator[tuple[int, str, str]]: ...

    async def aclose(self) -> None: ...


class MemoryKeyStore:
    """The process's own store, without REDIS_URL: one replica, lost at exit."""

    shared = False

    def __init__(self) -> None:
        self._items: dict[str, dict[str, str]] = {"key": {}, "tenant": {}}
        self._version = 0
        self._audit: collections.deque[str] = collections.deque(maxlen=AUDIT_KEPT)

    async def snapshot(self) -> Snapshot:
        return Snapshot(
            self._version,
            {k: KeyRecord.loads(v) for k, v in self._items["key"].items()},
            {k: TenantRecord.loads(v) for k, v in self._items["tenant"].items()},
        )

    async def version(self) -> int:
        return self._version

    async def read(self, kind: str, item_id: str) -> str | None:
        return self._items[kind].get(item_id)

    async def write(self, change: Write, audit: dict[str, Any]) -> int:
        items = self._items[change.kind]
        _check(change, items.get(change.id))
        if change.op == "delete":
            del items[change.id]
        else:
            assert change.value is not None
            items[change.id] = change.value
        self._version += 1
        self._audit.appendleft(json.dumps(audit))
        return self._version

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self._audit)[:limit]]

    async def notices(self) -> AsyncIterator[tuple[int, str, str]]:
        return
        yield  # an async generator that never yields: nobody else writes here

    async def aclose(self) -> None:
        return None


def _check(change: Write, current: str | None) -> None:
    if change.op == "create" and current is not None:
        raise WriteRefused("exists")
    if change.op == "delete" and current is None:
        raise WriteRefused("missing")
    if change.op == "replace" and current != change.expected:
        raise WriteRefused("changed" if current is not None else "missing")


# KEYS: the kind's hash, version, audit. ARGV: op, id, value, expected, audit record,
# records kept, channel, kind.
_WRITE = """
local current = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[1] == 'create' and current then return -1 end
if ARGV[1] == 'delete' and not current then return -2 end
if ARGV[1] == 'replace' then
  if not current then return -2 end
  if current ~= ARGV[4] then return -3 end
end
if ARGV[1] == 'delete' then
  redis.call('HDEL', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
local version = redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
redis.call('PUBLISH', ARGV[7], version .. ' ' .. ARGV[8] .. ' ' .. ARGV[2])
return version
"""
_REFUSALS = {-1: "exists", -2: "missing", -3: "changed"}

# KEYS: version, keys, tenants: all three read at one instant.
_SNAPSHOT = """
return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3])}
"""


class RedisKeyStore:
    """The store every replica sharing REDIS_URL reads; see `service.redis.keys.StoreNames`."""

    shared = True

    def __init__(self, redis: Any, names: StoreNames | None = None) -> None:
        self.redis = redis  # a redis-py asyncio client (plain, Sentinel or Cluster)
        self.names = names or StoreNames()

    def _hash(self, kind: str) -> str:
        return self.names.keys if kind == "key" else self.names.tenants

    async def snapshot(self) -> Snapshot:
        n = self.names
        async with _unavailable():
            version, keys, tenants = await self.redis.eval(
                _SNAPSHOT, 3, n.version, n.keys, n.tenants
            )
        return Snapshot(
            int(version),
            {_text(k): KeyRecord.loads(v) for k, v in _pairs(keys)},
            {_text(k): TenantRecord.loads(v) for k, v in _pairs(tenants)},
        )

    async def version(self) -> int:
        async with _unavailable():
            return int(await self.redis.get(self.names.version) or 0)

    async def read(self, kind: str, item_id: str) -> str | None:
        async with _unavailable():
            value = await self.redis.hget(self._hash(kind), item_id)
        return None if value is None else _text(value)

    async def write(self, change: Write, audit: dict[str, Any]) -> int:
        n = self.names
        async with _unavailable():
            result = await self.redis.eval(
                _WRITE,
                3,
                self._hash(change.kind),
                n.version,
                n.audit,
                change.op,
                change.id,
                change.value or "",
                change.expected or "",
                json.dumps(audit),
                AUDIT_KEPT,
                n.channel,
                change.kind,
            )
        if result < 0:
            raise WriteRefused(_REFUSALS[result])
        return int(result)

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        async with _unavailable():
            lines = await self.redis.lrange(self.names.audit, 0, limit - 1)
        return [json.loads(line) for line in lines]

    async def notices(self) -> AsyncIterator[tuple[int, str, str]]:
        """Each write's notice as published; ends (raising StoreUnavailable) when the
        connection fails. A client without pub/sub ends it at once: the version check alone
        keeps the replica current then."""
        if not hasattr(self.redis, "pubsub"):
            return
        pubsub = self.redis.pubsub()
        try:
            async with _unavailable():
                await pubsub.subscribe(self.names.channel)
            while True:
                async with _unavailable():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is None or message.get("type") != "message":
                    continue
                version, kind, item_id = _text(message["data"]).split(" ", 2)
                yield int(version), kind, item_id
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()


@contextlib.asynccontextmanager
async def _unavailable() -> AsyncIterator[None]:
    """Any failure of Redis (unreachable, loading, read-only after a failover) as
    StoreUnavailable: the admin API answers 503 and the replica keeps what it knows."""
    from redis.exceptions import RedisError

    try:
        yield
    except (TimeoutError, RedisError, OSError) as exc:
        raise StoreUnavailable(type(exc).__name__) from None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[Any] | dict[Any, Any]) -> list[tuple[Any, Any]]:
    if isinstance(flat, dict):
        return list(flat.items())
    return list(zip(flat[::2], flat[1::2], strict=True))
