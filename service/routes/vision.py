"""POST /api/v1/vision/analyze: an image and a prompt in, a chat.completion out. Never streams."""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

from service.http.asgi import send_json
from service.http.context import RequestContext
from service.routes.base import UpstreamRoute
from service.routes.chat import CHAT_PATH, answer_without_streaming
from service.routes.upstream_calls import call_json, with_upstream_model

_OWN_FIELDS = ("image_url", "prompt", "detail")


def vision_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages for a vision request (its own `messages`, or image + prompt)."""
    if "messages" in body:
        return body["messages"]
    image: dict[str, Any] = {"url": body["image_url"]}
    if body.get("detail"):
        image["detail"] = body["detail"]
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": image},
                {"type": "text", "text": body.get("prompt", "Describe this image.")},
            ],
        }
    ]


class VisionAnalyze(UpstreamRoute):
    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        body = ctx.payload
        assert body is not None
        chat_body = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
        chat_body["messages"] = vision_messages(body)
        if body.get("stream") is True:
            await answer_without_streaming(self.services, ctx, chat_body, receive, send)
            return
        chat_body.pop("stream", None)
        upstream_body = with_upstream_model(ctx, chat_body)
        raw = await call_json(self.services, ctx, receive, "POST", CHAT_PATH, upstream_body)
        await send_json(send, 200, raw)
