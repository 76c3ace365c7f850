"""The multiplexed connection over a Redis Cluster: one per master, a call sent to the master
of its key's hash slot.

The slot map comes from `CLUSTER SLOTS`, asked of any node that answers (the ones it knows,
then the URL's). It is asked again after a `MOVED` reply (`MultiplexedScript` then sends the
call again) and after `aclose`, which the limiter's failover calls before probing a Redis
that stopped answering: a master that died is replaced in the map once a replica has taken
its slots. Every script's keys carry one tenant's hash tag (`redis/keys.py`), so a call is
never split across slots.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError, RedisError

from service.redis.multiplexed import Arg, MultiplexedConnection, pack_command

Address = tuple[str, int]


def cluster_url(url: str) -> tuple[list[Address], str | None, str | None]:
    """(seed nodes, username, password) of `redis+cluster://[user:password@]host:port[,...]`."""
    parts = urlsplit(url)
    seeds = []
    for netloc in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
        seeds.append((host or "localhost", int(port or 6379)))
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return seeds, username, password


@functools.lru_cache(maxsize=65536)
def _slot(key: bytes) -> int:
    return key_slot(key)


class MultiplexedCluster:
    """Multiplexed connections to a Cluster's masters, routed by slot. Raises redis-py's
    exception types, as MultiplexedConnection does."""

    def __init__(
        self,
        seeds: list[Address],
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.seeds = seeds
        self.username, self.password, self.timeout = username, password, timeout
        self._nodes: dict[Address, MultiplexedConnection] = {}
        self._slots: list[MultiplexedConnection] | None = None  # slot -> its master's
        self._mapping = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, timeout: float = 1.0) -> MultiplexedCluster:
        """For `redis+cluster://[user:password@]host:port[,host:port...][/0]`."""
        seeds, username, password = cluster_url(url)
        return cls(seeds, username=username, password=password, timeout=timeout)

    def send(self, packed: bytes, key: bytes | None = None) -> Awaitable[Any]:
        """Send one packed command to the master of `key`'s slot (any master without one)."""
        slots = self._slots
        if slots is None:
            return self._map_and_send(packed, key)
        return self._master(slots, key).send(packed)

    def execute(self, *args: Arg) -> Awaitable[Any]:
        return self.send(pack_command(*args))

    def _master(self, slots: list[MultiplexedConnection], key: bytes | None) -> Any:
        return slots[_slot(key) if key is not None else 0]

    async def _map_and_send(self, packed: bytes, key: bytes | None) -> Any:
        await self._map()
        assert self._slots is not None
        return await self._master(self._slots, key).send(packed)

    async def remap(self) -> None:
        """Ask for the slot map again (after a MOVED reply)."""
        self._slots = None
        await self._map()

    async def _map(self) -> None:
        async with self._mapping:
            if self._slots is not None:
                return  # mapped while this caller waited
            failures = []
            for address in [*self._nodes, *(s for s in self.seeds if s not in self._nodes)]:
                try:
                    reply = await self._node(address).execute("CLUSTER", "SLOTS")
                except (RedisError, OSError) as exc:
                    failures.append(f"{address[0]}:{address[1]}: {exc}")
                    continue
                self._slots = self._slot_table(reply, address[0])
                return
            raise ConnectionError("no Cluster node answered CLUSTER SLOTS: " + "; ".join(failures))

    def _slot_table(self, reply: list[Any], asked: str) -> list[MultiplexedConnection]:
        table: list[MultiplexedConnection | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for first, last, master, *_ in reply:
            host = master[0].decode() if master[0] else asked  # empty: the node asked
            node = self._node((host, int(master[1])))
            table[first : last + 1] = [node] * (last - first + 1)
        if any(node is None for node in table):
            raise ConnectionError("the Cluster does not serve every hash slot")
        return table  # type: ignore[return-value]

    def _node(self, address: Address) -> MultiplexedConnection:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = MultiplexedConnection(
                *address, username=self.username, password=self.password, timeout=self.timeout
            )
        return node

    async def aclose(self) -> None:
        """Close every node's connection; the next call maps the slots again."""
        self._slots = None
        await asyncio.gather(*(node.aclose() for node in self._nodes.values()))
