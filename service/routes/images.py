"""POST /api/v1/images/generate and /images/generations: never streamed.

`stream` is removed before the upstream call (the xAI API refuses it); when it was asked
for, the response says so with `X-Stream-Fallback: true`.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from service.http.asgi import send_json
from service.http.context import RequestContext
from service.routes.base import UpstreamRoute
from service.routes.upstream_calls import STREAM_FALLBACK, call_json, with_upstream_model


class ImageGeneration(UpstreamRoute):
    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        body = dict(ctx.payload or {})
        if body.pop("stream", None):
            ctx.stream_fallback = True
            ctx.response_headers.append(STREAM_FALLBACK)
        ctx.stream = False
        upstream_body = with_upstream_model(ctx, body)
        raw = await call_json(
            self.services, ctx, receive, "POST", "images/generations", upstream_body
        )
        await send_json(send, 200, raw)
