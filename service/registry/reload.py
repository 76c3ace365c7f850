"""Keeps the key registry current: re-read on SIGHUP and when the file's content changes.

Kubernetes swaps a mounted Secret by moving a symlink, without signalling anyone, so the file
is polled (content, not mtime). A broken new file is refused with one log line; the registry
in force stays. Owned by the app's lifespan: `start()` there, `aclose()` on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from service.observability.metrics import KEY_RELOADS
from service.registry.keys import KeyRegistry, RegistryError, parse_registry
from service.registry.merge import MergedView

log = logging.getLogger("service.registry")


class RegistryHolder:
    """The registry in force (the file's merged with the admin API's keys), swapped
    atomically when a valid new file appears or the API's keys change."""

    def __init__(self, registry: KeyRegistry, path: str | None, poll_seconds: float = 2.0):
        self.view = MergedView(registry)
        self.current = registry
        self._path = Path(path) if path else None
        self._poll_seconds = poll_seconds
        self._last_raw: bytes | None = None
        # Why the file on disk is not the registry in force (/readyz says so), or None.
        self.reload_problem: str | None = None
        self._task: asyncio.Task[None] | None = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._last_raw = self._path.read_bytes()

    def reload(self, reason: str = "signal") -> bool:
        """Re-read the file now. Returns whether a new registry took effect."""
        if self._path is None:
            return False
        try:
            raw = self._path.read_bytes()
        except OSError as exc:
            self._last_raw = None  # so a missing file is reported once, not every poll
            return self._refuse(reason, f"{self._path}: cannot read key file: {exc.strerror}")
        if raw == self._last_raw and reason == "change":
            return False
        self._last_raw = raw
        try:
            registry = parse_registry(raw, source=str(self._path))
        except RegistryError as exc:
            return self._refuse(reason, str(exc))
        self.view.set_file(registry)
        self.refresh()
        self.reload_problem = None
        KEY_RELOADS.labels(result="ok").inc()
        log.info("key registry reloaded (%s): %d keys", reason, len(registry))
        return True

    def refresh(self) -> None:
        """Put the merged registry in force after the file or the API's records changed."""
        self.current = self.view.build()

    def _refuse(self, reason: str, problem: str) -> bool:
        KEY_RELOADS.labels(result="error").inc()
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.reload_problem = (
            f"the key file on disk failed to reload at {when} ({reason}); "
            "the previous keys stay in force (the log says why)"
        )
        log.error("key registry reload (%s) refused, keeping the old one: %s", reason, problem)
        return False

    def start(self) -> None:
        """Install the SIGHUP handler and start polling (call inside the running loop)."""
        if self._path is None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        self._task = loop.create_task(self._poll())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            assert self._path is not None
            try:
                raw = self._path.read_bytes()
            except OSError:
                raw = None
            if raw != self._last_raw:
                self.reload("change")
