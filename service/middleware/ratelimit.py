"""Admit the request against its key's (and tenant's) budgets; release it when it ends.

One unit per request, counted at admission however long it then streams; refused requests
spend nothing (the limiter checks every window before consuming any). The release runs
whatever happens to the request, and charges the tokens the route recorded.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.context import RequestContext
from service.errors import ApiError
from service.limiter import rate_limit_headers
from service.limiter.base import Decision, Limiter, LimiterUnavailable
from service.registry.models import ModelCatalog
from service.usage.record import Charge, Usage

_MESSAGES = {
    "rate_limit_exceeded": "Rate limit reached for requests",
    "tokens_limit_exceeded": "Token budget spent",
    "concurrency_limit_exceeded": "Too many requests in flight",
}


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope["gateway"]
        policy = ctx.key.policy
        try:
            decision = await self.limiter.admit(policy)
        except LimiterUnavailable:
            ctx.reason = "rate_limiter_unavailable"
            await ApiError(
                503,
                "The rate limiter's store is unreachable; retry shortly.",
                code="rate_limiter_unavailable",
                type="server_error",
                headers=[(b"retry-after", b"1")],
            ).send(send)
            return
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            ctx.reason = decision.reason
            await _refusal(ctx.key.id, decision, headers).send(send)
            return
        ctx.response_headers.extend(headers)
        try:
            await self.app(scope, receive, send)
        finally:
            charge = charge_of(ctx)
            await self.limiter.release(policy, decision, charge.usage.total_tokens)


def charge_of(ctx: RequestContext) -> Charge:
    """What an admitted request is charged on release; its cost goes to the access log too."""
    usage = ctx.usage or Usage()
    catalog = ctx.catalog or ModelCatalog()
    ticks, known = catalog.cost(ctx.model, usage)
    ctx.cost_ticks, ctx.cost_known = ticks, known
    return Charge(
        usage=usage,
        model=ctx.model or "-",
        cost_ticks=ticks,
        cost_known=known,
        record_response=ctx.response_id,
        forget_response=ctx.deleted_response,
    )


def _refusal(key_id: str, decision: Decision, headers: list[tuple[bytes, bytes]]) -> ApiError:
    reason = decision.reason or "rate_limit_exceeded"
    window = decision.tokens if reason == "tokens_limit_exceeded" else decision.requests
    detail = ""
    if reason == "concurrency_limit_exceeded":
        detail = " (concurrent requests cap)"
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
