"""Know the upstream: poll xAI's key-status endpoint, `GET {XAI_BASE_URL}/api-key`.

At start and every UPSTREAM_STATUS_INTERVAL_SECONDS the gateway asks each upstream of its
pool, with that upstream's key, and keeps one short text for `/readyz` (`"upstreams"`), the
gauge `gateway_upstream_up{upstream}` and one log line per change:

- `checking`: before the first answer;
- `ok`: 200, the key and its team usable;
- `key blocked`, `team blocked`, `key disabled`: 200 with `api_key_blocked`, `team_blocked`,
  `api_key_disabled` true;
- `key rejected`: 401 or 403, or xAI's 400 for a wrong key;
- `not an xAI API (404 on /api-key: does XAI_BASE_URL end in /v1?)`: 404;
- `not an xAI API (HTTP <status> on /api-key)`: a redirect (never followed) or another 4xx;
- `not an xAI API (no key status in the answer)`: a 200 that is not xAI's key status;
- `upstream error (HTTP <status> on /api-key)`: 429 or 5xx;
- `unreachable`: no connection, or no answer within the timeout.

It never fails readiness: every replica would leave the Service at once. Owned by the
pool: `start()` in the running loop, `aclose()` on shutdown; one task per upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import httpx

from service.observability.metrics import UPSTREAM_UP
from service.upstream.body import read_error_body
from service.upstream.client import Upstream
from service.upstream.errors import upstream_message

log = logging.getLogger("service.upstream")

PATH = "api-key"
CHECKING = "checking"
OK = "ok"
UNREACHABLE = "unreachable"
NOT_XAI_404 = "not an xAI API (404 on /api-key: does XAI_BASE_URL end in /v1?)"


class UpstreamStatus:
    """The last answer of the upstream's key-status endpoint, refreshed in the background."""

    def __init__(
        self, upstream: Upstream, interval: float, timeout: float, name: str = "default"
    ) -> None:
        self.upstream = upstream
        self.name = name
        self.interval = interval
        self.timeout = timeout
        self.state = CHECKING
        self.on_change: Callable[[], None] | None = None  # the pool's gauge update
        self._no_route = False  # an API call was answered "no route" since the state changed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:  # once
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self._set(await self.check())
            await asyncio.sleep(self.interval)

    async def check(self) -> str:
        """Ask the upstream once; the state its answer means."""
        request = self.upstream.request("GET", PATH, None, b"application/json")
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.upstream.send(request)
                body = await read_error_body(response)  # capped at 64 KiB, closes it
        except (TimeoutError, httpx.HTTPError, OSError):
            return UNREACHABLE
        return state_of(response.status_code, body)

    @property
    def misconfigured(self) -> bool:
        """Whether XAI_BASE_URL is known to be wrong: no key status (404) and no route for an
        API call. Either alone is not enough: an OpenAI-compatible upstream has no /api-key."""
        return self._no_route and self.state == NOT_XAI_404

    def note_no_route(self) -> None:
        """An API call was answered "no route for ...": requests are refused before admission
        while the key status still says 404."""
        self._no_route = True

    def _set(self, state: str) -> None:
        if state == self.state:
            return
        self._no_route = False
        previous, self.state = self.state, state
        if self.on_change is not None:
            self.on_change()
        else:
            UPSTREAM_UP.labels(self.name).set(1 if state == OK else 0)
        level = logging.INFO if state == OK else logging.WARNING
        named = "" if self.name == "default" else f" {self.name}"
        log.log(level, "upstream%s status: %s (was %s)", named, state, previous)


def state_of(status: int, body: bytes) -> str:
    """What an answer of `GET /api-key` says about the upstream and the gateway's key."""
    if status == 200:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "api_key_blocked" not in doc:
            return "not an xAI API (no key status in the answer)"
        if doc.get("api_key_blocked") is True:
            return "key blocked"
        if doc.get("team_blocked") is True:
            return "team blocked"
        if doc.get("api_key_disabled") is True:
            return "key disabled"
        return OK
    if status in (401, 403):
        return "key rejected"
    if status == 400 and "api key" in upstream_message(body).lower():
        return "key rejected"
    if status == 404:
        return NOT_XAI_404
    if status == 429 or status >= 500:
        return f"upstream error (HTTP {status} on /api-key)"
    return f"not an xAI API (HTTP {status} on /api-key)"
