"""What every route that calls the upstream shares: its services, and how a failure is answered.

A route implements `answer()`; an `ApiError` raised anywhere in it (an upstream error, a
timeout, a refused body) becomes that error's OpenAI-shaped response, its code kept as the
access log's reason. A route that words some errors its own way overrides `refuse()`.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from service.deps import Services
from service.http.context import RequestContext
from service.http.errors import ApiError
from service.upstream.errors import UpstreamMisconfigured


class UpstreamRoute:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        try:
            await self.answer(scope, ctx, receive, send)
        except ApiError as error:
            await self.refuse(scope, ctx, error, send)

    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        """Answer the request (`ctx` holds its key and validated body); raise ApiError to fail."""
        raise NotImplementedError

    async def refuse(self, scope: Scope, ctx: RequestContext, error: ApiError, send: Send) -> None:
        """Send the error that ended `answer()`."""
        ctx.reason = ctx.reason or error.code
        if isinstance(error, UpstreamMisconfigured) and self.services.upstream_status is not None:
            self.services.upstream_status.note_no_route()
        await error.send(send)
