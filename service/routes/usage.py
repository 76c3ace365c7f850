"""GET /api/v1/usage: the calling key's budgets and what it (and its tenant) used.

Reads the limiter's running sums without consuming any budget, so it sits outside the rate
limiter: it spends nothing, is not in the ledger, and answers when every budget is spent. Its
own rate (USAGE_READS_PER_SECOND a key, across replicas) is counted in the same script call. Spend
amounts are shown in USD, exactly (see `service.usage.report`).

A key refused for reading too often is refused by this replica alone until its `Retry-After`
has passed, and a read that comes back before then gets its 429 only when that time is up: a
client that loops on its 429s is paced to the permitted rate, costing no Redis round trip and
no CPU a flood would take from other tenants' requests.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from service.deps import Services
from service.http.asgi import send_json
from service.http.context import RequestContext
from service.http.errors import ApiError, limiter_unavailable
from service.limiter.base import USAGE_READS_PER_SECOND, LimiterUnavailable, ReadsExceeded
from service.usage.report import Usd, json_bytes, totals_doc

if TYPE_CHECKING:
    from service.limiter.base import LimitState, UsageSnapshot
    from service.usage.record import Totals


_REFUSALS_KEPT = 10_000  # keys remembered as refused at once; beyond, the expired go


class KeyUsage:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._refused_until: dict[str, float] = {}  # key id -> time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        key = ctx.key
        assert key is not None  # behind AuthMiddleware
        until = self._refused_until.get(key.id)
        if until is not None:
            wait = until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # paced: held, not answered at once
                await self._refuse(ctx, send, wait)
                return
            del self._refused_until[key.id]
        try:
            snapshot = await self.services.limiter.usage_snapshot(key.policy)
        except ReadsExceeded as exc:
            self._remember(key.id, exc.retry_after)
            await self._refuse(ctx, send, exc.retry_after)
            return
        except LimiterUnavailable as exc:
            ctx.reason = "rate_limiter_unavailable"
            await limiter_unavailable(
                f"The limiter's store {exc}, so usage cannot be read; retry shortly."
            ).send(send)
            return
        await send_json(send, 200, json_bytes(usage_doc(key.id, key.tenant, snapshot)))

    def _remember(self, key_id: str, retry_after: float) -> None:
        now = time.monotonic()
        if len(self._refused_until) >= _REFUSALS_KEPT:
            self._refused_until = {k: t for k, t in self._refused_until.items() if t > now}
        self._refused_until[key_id] = now + retry_after

    @staticmethod
    async def _refuse(ctx: RequestContext, send: Send, retry_after: float) -> None:
        ctx.reason = "rate_limit_exceeded"
        await ApiError(
            429,
            f"Usage is read at most {USAGE_READS_PER_SECOND} times a second per key; "
            "retry in a second.",
            code="rate_limit_exceeded",
            type="rate_limit_error",
            headers=[(b"retry-after", b"%d" % max(1, math.ceil(retry_after)))],
        ).send(send)


def usage_doc(key_id: str, tenant: str | None, snapshot: UsageSnapshot) -> dict[str, Any]:
    """SPEC section 8's answer. A key without a tenant has `"tenant": null` in both places."""
    return {
        "object": "usage",
        "key_id": key_id,
        "tenant": tenant,
        "limits": [limit_doc(state) for state in snapshot.limits],
        "usage": {
            "key": _period_doc(snapshot.key_today, snapshot.key_month),
            "tenant": (
                _period_doc(snapshot.tenant_today, snapshot.tenant_month)
                if tenant is not None
                and snapshot.tenant_today is not None
                and snapshot.tenant_month is not None
                else None
            ),
        },
    }


def limit_doc(state: LimitState) -> dict[str, Any]:
    """One limit; spend in USD; `reset_seconds` in whole seconds, rounded up."""
    spend = state.kind == "spend"
    reset = state.reset_seconds
    return {
        "scope": state.scope,
        "kind": state.kind,
        "window": state.window,
        "limit": Usd(state.limit) if spend else state.limit,
        "remaining": Usd(state.remaining) if spend else state.remaining,
        "reset_seconds": None if reset is None else max(0, math.ceil(reset)),
    }


def _period_doc(today: Totals, month: Totals) -> dict[str, Any]:
    return {"today": totals_doc(today), "month": totals_doc(month)}
