"""The upstreams a request may go to, and which one it goes to.

The key file's `[[upstreams]]` (or, without any, one `default` upstream from XAI_BASE_URL and
XAI_API_KEY) become members of the pool, each with its own key, its own key-status poller
(`status.py`) and a count of requests in flight in this process. A request goes to the member
its tenant may use (the tenant's `upstreams`, else every member with `pool = true`) that has
the fewest requests in flight and is not out of credits.

Before the client has received a byte, a failed connection, a 5xx or a rate-limited 429 is
tried once more on another member the tenant may use, if there is one (never after: the
relay has started). A no-credits or spending-limit answer takes that member out of rotation
for OUT_OF_CREDITS_SECONDS (logged once, `gateway_upstream_up{upstream}` 0, `/readyz`); the
request moves on to another member, else the client gets 503 `upstream_quota_exhausted`.

The members follow the registry: a reloaded key file that changes `[[upstreams]]` rebuilds
the pool (members whose definition did not change keep their state). Owned by the app
lifespan: `start()` in the running loop, `aclose()` on shutdown; the members share one
transport, closed with the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from httpx_aiohttp import AiohttpTransport

from service.observability.metrics import UPSTREAM_UP
from service.registry.reload import RegistryHolder
from service.registry.upstreams import DEFAULT_UPSTREAM, UpstreamSpec
from service.settings import Settings
from service.upstream.call import JSON, UpstreamPolicy, open_upstream
from service.upstream.client import Upstream, shared_transport
from service.upstream.errors import UpstreamError
from service.upstream.status import OK, UpstreamStatus

log = logging.getLogger("service.upstream")

OUT_OF_CREDITS = "out of credits"
OUT_OF_CREDITS_SECONDS = 60.0
# Failures another upstream may not share; tried once more elsewhere before the first byte.
_STEP_AROUND = frozenset({"unreachable", "server_error", "rate_limited"})


@dataclass(eq=False, slots=True)
class Member:
    """One upstream of the pool and what this process knows of it."""

    spec: UpstreamSpec
    client: Upstream
    status: UpstreamStatus
    in_flight: int = 0
    out_until: float = 0.0  # monotonic time until which it is out of credits

    @property
    def name(self) -> str:
        return self.spec.name

    def state(self, now: float) -> str:
        return OUT_OF_CREDITS if self.out_until > now else self.status.state


class UpstreamPool:
    def __init__(
        self,
        settings: Settings,
        registry: RegistryHolder,
        clock: Callable[[], float] = time.monotonic,
        transport: AiohttpTransport | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.members: dict[str, Member] = {}
        self._specs: tuple[UpstreamSpec, ...] | None = None
        # Given (wrapped for tracing, say) or made here; the pool closes it either way.
        self._transport = transport or shared_transport(settings)
        self._started = False
        self._turn = 0

    def start(self) -> None:
        """Build the members and start their pollers (call inside the running loop)."""
        self._started = True
        self._sync()
        for member in self.members.values():
            member.status.start()

    async def aclose(self) -> None:
        for member in self.members.values():
            await member.status.aclose()
        await self._transport.aclose()

    @property
    def first(self) -> Member:
        self._sync()
        return next(iter(self.members.values()))

    def select(
        self,
        tenant: str | None,
        exclude: Sequence[Member] = (),
        rotate: bool = True,
        conversation: bytes | None = None,
    ) -> Member | None:
        """Among the members `tenant` may use that are not out of credits (nor in `exclude`):
        a conversation's own (by rendezvous hashing of its id, so its every turn meets the
        same prompt cache while that member serves), else the one with the fewest requests in
        flight. None if there is none. `rotate`: this choice takes a turn among ties (a
        request's first choice does, its fallbacks do not)."""
        now = self.clock()
        members = self.allowed(tenant)
        if conversation is not None:
            usable = [m for m in members if m.out_until <= now and m not in exclude]
            return max(
                usable,
                key=lambda m: zlib.crc32(m.name.encode(), zlib.crc32(conversation)),
                default=None,
            )
        # Ties go round: requests one after another spread too, not only those in flight.
        self._turn += rotate
        start = self._turn % len(members) if members else 0
        best: Member | None = None
        for member in members[start:] + members[:start]:
            if member.out_until > now or member in exclude:
                continue
            if best is None or member.in_flight < best.in_flight:
                best = member
        return best

    def allowed(self, tenant: str | None) -> list[Member]:
        """The members `tenant` may use: its own list, else the default pool."""
        self._sync()
        names = self.registry.current.tenant_upstreams.get(tenant) if tenant else None
        if names is not None:
            return [self.members[name] for name in names if name in self.members]
        return [member for member in self.members.values() if member.spec.pool]

    def named(self, name: str | None) -> Member | None:
        self._sync()
        return self.members.get(name) if name else None

    def mark_out_of_credits(self, member: Member, message: str) -> None:
        """Send `member` nothing for OUT_OF_CREDITS_SECONDS; logged once per episode."""
        now = self.clock()
        if member.out_until <= now:
            log.warning(
                "upstream %s is out of credits; sending it nothing for %gs: %s",
                member.name,
                OUT_OF_CREDITS_SECONDS,
                message,
            )
        member.out_until = now + OUT_OF_CREDITS_SECONDS
        UPSTREAM_UP.labels(member.name).set(0)
        asyncio.get_running_loop().call_later(OUT_OF_CREDITS_SECONDS, self._gauge, member)

    def states(self) -> dict[str, str]:
        """Each member's state for `/readyz`: its key status, or `out of credits`."""
        self._sync()
        now = self.clock()
        return {name: member.state(now) for name, member in self.members.items()}

    def _gauge(self, member: Member) -> None:
        UPSTREAM_UP.labels(member.name).set(1 if member.state(self.clock()) == OK else 0)

    def _sync(self) -> None:
        """Follow the registry's `[[upstreams]]` (one identity check when nothing changed)."""
        specs = self.registry.current.upstreams
        if specs is self._specs and self.members:
            return
        self._specs = specs
        wanted = specs or (self._default_spec(),)
        members: dict[str, Member] = {}
        for spec in wanted:
            kept = self.members.get(spec.name)
            if kept is not None and kept.spec == spec:
                members[spec.name] = kept
                continue
            members[spec.name] = self._member(spec)
        for name, old in self.members.items():
            if members.get(name) is not old:
                self._retire(old)
        self.members = members

    def _member(self, spec: UpstreamSpec) -> Member:
        settings = self.settings
        client = Upstream(settings, spec.base_url, spec.api_key, self._transport)
        status = UpstreamStatus(
            client,
            interval=settings.upstream_status_interval,
            timeout=settings.connect_timeout + 10,  # connect, then a light GET
            name=spec.name,
        )
        member = Member(spec, client, status)
        status.on_change = lambda: self._gauge(member)
        if self._started:
            status.start()
        return member

    def _retire(self, member: Member) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(member.status.aclose())
        if member.name not in {spec.name for spec in self._specs or ()}:
            with contextlib.suppress(KeyError):
                UPSTREAM_UP.remove(member.name)

    def _default_spec(self) -> UpstreamSpec:
        settings = self.settings
        return UpstreamSpec(
            DEFAULT_UPSTREAM, settings.xai_base_url, "XAI_API_KEY", True, settings.xai_api_key
        )


def quota_exhausted() -> UpstreamError:
    """Every upstream the tenant may use is out of credits: not worth retrying soon."""
    return UpstreamError(
        "out_of_credits",
        503,
        "Every upstream this key may use is out of credits or at its spending limit; the "
        "operator must add credits or raise the limit.",
        code="upstream_quota_exhausted",
        type="server_error",
        headers=[(b"x-should-retry", b"false")],
    )


async def open_in_pool(
    pool: UpstreamPool,
    tenant: str | None,
    pinned: str | None,
    method: str,
    path: str,
    policy: UpstreamPolicy,
    body: bytes | None = None,
    accept: bytes = JSON,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    conversation: bytes | None = None,
) -> tuple[httpx.Response, Member]:
    """Open the request on a member and return its 2xx response and the member, whose
    `in_flight` the caller gives back (`member.in_flight -= 1`) when the request ends.

    `pinned` names the member that must answer (a stored response lives there): no other is
    tried. `conversation` (its `x-grok-conv-id`) keeps a conversation on one member.
    Raises UpstreamError as `open_upstream` does, or 503 `upstream_quota_exhausted`.
    """
    member = pool.named(pinned)
    if member is not None and member.out_until > pool.clock():
        raise quota_exhausted()
    if member is None:
        member = pool.select(tenant, conversation=conversation)
        pinned = None
        if member is None:
            if not pool.allowed(tenant):  # a key the file does not know (an API key's tenant)
                raise UpstreamError(
                    "no_upstream",
                    503,
                    "No upstream is configured for this key's tenant; the operator must add "
                    "one to the default pool or to the tenant's upstreams.",
                    code="upstream_unavailable",
                    type="server_error",
                )
            raise quota_exhausted()
    tried: list[Member] = []
    retry_left = pinned is None
    while True:
        alternative = None if pinned else pool.select(tenant, [*tried, member], rotate=False)
        # With another upstream to step to, the first answer decides: no retries in place.
        attempt = policy if alternative is None else dataclasses.replace(policy, retries=0)
        member.in_flight += 1
        try:
            response = await open_upstream(
                member.client, method, path, attempt, body, accept, extra
            )
        except UpstreamError as error:
            member.in_flight -= 1
            error.upstream = member.name
            tried.append(member)
            if error.kind == "auth":
                log.error("upstream %s rejected its key (%s)", member.name, member.spec.api_key_env)
            if error.kind == "out_of_credits":
                pool.mark_out_of_credits(member, error.message)
                nxt = None if pinned else pool.select(tenant, tried, rotate=False)
                if nxt is None:
                    raise quota_exhausted() from None
                member = nxt
                continue
            if error.kind in _STEP_AROUND and retry_left and alternative is not None:
                log.warning(
                    "upstream %s failed before the first byte (%s); trying %s",
                    member.name,
                    error.kind,
                    alternative.name,
                )
                retry_left = False
                member = alternative
                continue
            raise
        except BaseException:
            member.in_flight -= 1
            raise
        return response, member
