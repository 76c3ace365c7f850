"""Before the limiter: while the gateway knows its upstream URL is wrong, API requests get
502 `upstream_error` at once, spending nothing and calling nothing (`UpstreamStatus` learns it
from the key-status check and one API call answered "no route")."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import Services
from service.http.context import RequestContext
from service.upstream.errors import UpstreamMisconfigured


class RefuseWhileMisconfigured:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = self.services.upstream_status
        if status is not None and status.misconfigured:
            ctx: RequestContext = scope["gateway"]
            error = UpstreamMisconfigured()
            ctx.reason = error.code
            await error.send(send)
            return
        await self.app(scope, receive, send)
