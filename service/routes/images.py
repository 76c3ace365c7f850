"""POST /api/v1/images/generate and /images/generations: never streamed.

`stream` is removed before the upstream call (the xAI API refuses it); when it was asked
for, the response says so with `X-Stream-Fallback: true`.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from service.asgi import send_json
from service.context import RequestContext
from service.deps import Services
from service.errors import ApiError
from service.routes.completion import STREAM_FALLBACK, call_json, with_upstream_model


class ImageGeneration:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        body = dict(ctx.payload or {})
        if body.pop("stream", None):
            ctx.stream_fallback = True
            ctx.response_headers.append(STREAM_FALLBACK)
        ctx.stream = False
        try:
            upstream_body = with_upstream_model(ctx, body)
            raw = await call_json(
                self.services, ctx, receive, "POST", "images/generations", upstream_body
            )
        except ApiError as error:
            ctx.reason = ctx.reason or error.code
            await error.send(send)
            return
        await send_json(send, 200, raw)
