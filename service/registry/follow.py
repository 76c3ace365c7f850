"""Keeps this replica's copy of the admin API's keys current, and writes through it.

Each write's notice names one record: the replica reads that record and puts the merged
registry in force, so a change reaches every replica in the time of one message and one read.
A lost notice cannot leave a replica stale: the store's version is checked every
`check_seconds`, and a replica still behind a version it saw at the previous check reloads
everything (so a lost message heals within two checks). While the store is unreachable the
replica keeps the keys it knows; it catches up when the store answers again.

Owned by the app's lifespan: `start()` there, `aclose()` on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from service.observability.metrics import KEY_STORE_UP, KEY_STORE_UPDATES
from service.registry.records import KeyRecord, TenantRecord
from service.registry.reload import RegistryHolder
from service.registry.store import KeyStore, StoreUnavailable, Write

log = logging.getLogger("service.registry")


class StoreFollower:
    def __init__(self, store: KeyStore, holder: RegistryHolder, check_seconds: float = 0.25):
        self.store = store
        self.holder = holder
        self.check_seconds = check_seconds
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: int | None = None  # a version the last check saw ahead of ours
        self._reachable = True

    async def start(self) -> None:
        """Load the store's records (if it answers), then follow its changes."""
        with contextlib.suppress(StoreUnavailable):
            await self.reload()
        if self.store.shared:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._listen()), loop.create_task(self._check())]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.aclose()

    async def write(self, change: Write, audit: dict[str, Any]) -> int:
        """Write `change` to the store and put it in force here at once (read your writes);
        raises StoreUnavailable or WriteRefused."""
        async with self._lock:
            version = await self.store.write(change, audit)
            self._apply(change.kind, change.id, change.value)
            if not self.store.shared:
                self.holder.view.version = version
            return version

    async def reload(self) -> None:
        """Every record, read at one instant (under the lock: no notice applies meanwhile)."""
        async with self._lock:
            snapshot = await self.store.snapshot()
            self.holder.view.load(snapshot)
            self.holder.refresh()
        KEY_STORE_UPDATES.labels(how="reload").inc()

    def _apply(self, kind: str, item_id: str, value: str | None) -> None:
        view = self.holder.view
        if kind == "key":
            view.put_key(KeyRecord.loads(value) if value else None, item_id)
        else:
            view.put_tenant(TenantRecord.loads(value) if value else None, item_id)
        self.holder.refresh()

    async def on_notice(self, version: int, kind: str, item_id: str) -> None:
        """One write's notice: the next version is read alone, a gap means a full reload."""
        if version <= self.holder.view.version:
            return
        if version != self.holder.view.version + 1:
            await self.reload()
            return
        value = await self.store.read(kind, item_id)
        async with self._lock:
            if version == self.holder.view.version + 1:
                self._apply(kind, item_id, value)
                self.holder.view.version = version
                KEY_STORE_UPDATES.labels(how="notice").inc()
        # else a reload overtook this notice: it read this record too

    async def check(self) -> None:
        """Compare versions; reload when still behind what the previous check saw (a notice
        in flight gets one check's time to arrive)."""
        version = await self.store.version()
        ours = self.holder.view.version
        if version < ours or (self._seen is not None and ours < self._seen):
            await self.reload()  # behind for two checks, or the store lost its records
            self._seen = None
        else:
            self._seen = version if version > ours else None

    async def _listen(self) -> None:
        while True:
            try:
                async for version, kind, item_id in self.store.notices():
                    await self.on_notice(version, kind, item_id)
                await asyncio.sleep(3600)  # no notices from this store: the checks alone
            except StoreUnavailable:
                await asyncio.sleep(self.check_seconds)
            except Exception:  # a bad notice must not end the following
                log.exception("key store notice not applied; the version check will catch up")
                await asyncio.sleep(self.check_seconds)

    async def _check(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check()
            except StoreUnavailable:
                if self._reachable:
                    log.warning("key store (Redis) unreachable: serving the keys known")
                self._reachable = False
                KEY_STORE_UP.set(0)
                continue
            except Exception:
                log.exception("key store check failed")
                continue
            if not self._reachable:
                log.info("key store (Redis) reachable again")
            self._reachable = True
            KEY_STORE_UP.set(1)
