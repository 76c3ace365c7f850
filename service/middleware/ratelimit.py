"""Admit the request against its key's (and tenant's) budgets; release it when it ends.

One unit per request, counted at admission however long it then streams; refused requests
spend nothing (the limiter checks every window before consuming any). A request naming
stored objects (`ctx.owned`: responses, items, a conversation) is admitted only if the key's
tenant owns them all, else answered exactly like an unknown id. The release runs whatever
happens to the request: it takes the charge `service.usage.charge` works out from what the
route recorded (tokens, cost, the ledger; stored ids created or deleted) and counts it in the
usage metrics.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.context import RequestContext
from service.http.errors import ApiError, limiter_unavailable, response_not_found
from service.limiter import rate_limit_headers
from service.limiter.base import Decision, Limiter, LimiterUnavailable
from service.limiter.policy import without_cost_budgets
from service.usage.charge import charge_for, count_usage
from service.usage.cost import estimate_ticks
from service.usage.prices import estimate_price
from service.usage.record import Charge

_MESSAGES = {
    "rate_limit_exceeded": "Rate limit reached for requests",
    "tokens_limit_exceeded": "Token budget spent",
    "concurrency_limit_exceeded": "Too many requests in flight",
    "spend_limit_exceeded": "Spend budget reached",
}


class RateLimitMiddleware:
    """`cost_free`: the route costs nothing upstream (reading or deleting a stored response):
    it spends one request unit and a concurrency slot, and spent token or spend budgets do
    not refuse it."""

    def __init__(self, app: ASGIApp, limiter: Limiter, *, cost_free: bool = False) -> None:
        self.app = app
        self.limiter = limiter
        self.cost_free = cost_free

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope["gateway"]
        policy = ctx.key.policy
        if self.cost_free:
            policy = without_cost_budgets(policy)
        hold = _estimate(ctx) if policy.spend or policy.tenant_spend else 0
        try:
            decision = await self.limiter.admit(policy, ctx.owned, hold)
        except LimiterUnavailable as exc:
            ctx.reason = "rate_limiter_unavailable"
            await limiter_unavailable(f"The rate limiter's store {exc}; retry shortly.").send(send)
            return
        if decision.reason == "not_found":
            ctx.reason = "not_found"
            missing = decision.missing or ""
            await response_not_found(missing, ctx.owned_kinds.get(missing, "response")).send(send)
            return
        ctx.pinned_upstream = decision.upstream  # stored objects stay with their upstream
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            ctx.reason = decision.reason
            await _refusal(ctx.key.id, decision, headers).send(send)
            return
        ctx.response_headers.extend(headers)
        try:
            await self.app(scope, receive, send)
        finally:
            charge = _charge(ctx)
            await self.limiter.release(policy, decision, charge)
            count_usage(policy.tenant, charge)


def _served_as(ctx: RequestContext) -> str | None:
    """The model the upstream serves for the one the client named (prices use it)."""
    return ctx.catalog.upstream_name(ctx.model) if ctx.catalog and ctx.model else ctx.model


def _estimate(ctx: RequestContext) -> int:
    """What the request will likely cost: held against its spend budgets until it ends."""
    price = estimate_price(_served_as(ctx), ctx.prices or {})
    return estimate_ticks(ctx.payload, ctx.body_size, price)


def _charge(ctx: RequestContext) -> Charge:
    """The request's charge; its cost goes to the access log too."""
    charge = charge_for(
        ctx.usage,
        ctx.model,
        _served_as(ctx),
        ctx.prices or {},
        status=ctx.status,
        record=(ctx.response_id, *ctx.item_ids) if ctx.response_id else (),
        forget_response=ctx.deleted_response,
        upstream=ctx.upstream,
    )
    ctx.cost_ticks, ctx.cost_known = charge.cost_ticks, charge.cost_known
    return charge


def _refusal(key_id: str, decision: Decision, headers: list[tuple[bytes, bytes]]) -> ApiError:
    reason = decision.reason or "rate_limit_exceeded"
    window = decision.tokens if reason == "tokens_limit_exceeded" else decision.requests
    detail = ""
    if reason == "concurrency_limit_exceeded":
        detail = " (concurrent requests cap)"
    elif reason == "spend_limit_exceeded":
        detail = f" ({decision.spend_limit})" if decision.spend_limit else ""
        if decision.retry_after > 1:
            # Spent: not before the period ends, so the OpenAI SDK should not retry at all
            # (a budget only held by requests in flight frees as they end: retry soon).
            headers = [*headers, (b"x-should-retry", b"false")]
    elif window is not None:
        detail = f" (limit {window.limit}, resets in {window.reset_seconds:.0f}s)"
    return ApiError(
        429,
        f"{_MESSAGES.get(reason, 'Rate limit reached')} for key '{key_id}'{detail}. "
        f"Retry after {decision.retry_after}s.",
        code=reason,
        type="rate_limit_error",
        headers=headers,
    )
