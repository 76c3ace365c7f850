"""POST /api/v1/chat/completions: streamed through as SSE, or answered whole.

A request with image content that asks to stream gets the vision fallback of the seed
document: one non-streaming upstream call, the complete response, `X-Stream-Fallback: true`.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

from service.deps import Services
from service.http.asgi import send_json
from service.http.context import RequestContext
from service.http.validation import has_image_content
from service.routes.base import UpstreamRoute
from service.routes.upstream_calls import (
    STREAM_FALLBACK,
    call_json,
    call_stream,
    parse_completion,
    with_upstream_model,
)
from service.sse import DONE, SSE_HEADERS, ChatDialect, completion_as_chunk

CHAT_PATH = "chat/completions"


class ChatCompletions(UpstreamRoute):
    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        body = ctx.payload
        assert body is not None
        if body.get("stream") is not True:
            upstream_body = with_upstream_model(ctx, body)
            raw = await call_json(self.services, ctx, receive, "POST", CHAT_PATH, upstream_body)
            await send_json(send, 200, raw)
        elif has_image_content(body["messages"]):
            await answer_without_streaming(self.services, ctx, body, receive, send)
        else:
            await self._stream(ctx, body, receive, send)

    async def _stream(
        self, ctx: RequestContext, body: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        options = body.get("stream_options") or {}
        # Always ask for usage, to charge token budgets; the relay delivers it the OpenAI way
        # (or xAI's, GATEWAY_STREAM_USAGE=passthrough) and only when the client asked.
        upstream_body = with_upstream_model(
            ctx, {**body, "stream_options": {**options, "include_usage": True}}
        )
        dialect = ChatDialect(
            client_wants_usage=options.get("include_usage") is True,
            passthrough=self.services.settings.stream_usage == "passthrough",
        )
        await call_stream(self.services, ctx, receive, send, CHAT_PATH, upstream_body, dialect)


async def answer_without_streaming(
    services: Services, ctx: RequestContext, body: dict[str, Any], receive: Receive, send: Send
) -> None:
    """The vision stream fallback: one non-streaming call, answered whole (JSON or one event)."""
    upstream_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    upstream_body = with_upstream_model(ctx, upstream_body)
    raw = await call_json(services, ctx, receive, "POST", CHAT_PATH, upstream_body)
    ctx.stream_fallback = True
    ctx.response_headers.append(STREAM_FALLBACK)
    if services.settings.vision_fallback == "json":
        await send_json(send, 200, raw)
        return
    options = body.get("stream_options") or {}
    event = completion_as_chunk(parse_completion(raw), options.get("include_usage") is True)
    assert event.endswith(DONE)
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await send({"type": "http.response.body", "body": event, "more_body": False})
