"""GET /api/v1/models: the upstream's model list, filtered to the key's allow-list."""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from service.asgi import send_json
from service.context import RequestContext
from service.deps import Services
from service.errors import ApiError
from service.routes.completion import call_json


class ListModels:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        try:
            raw = await call_json(self.services, ctx, receive, "GET", "models", None)
        except ApiError as error:
            ctx.reason = ctx.reason or error.code
            await error.send(send)
            return
        allowed = ctx.key.models if ctx.key is not None else None
        if allowed is not None:
            try:
                doc = json.loads(raw)
                doc["data"] = [m for m in doc.get("data", []) if m.get("id") in allowed]
                raw = json.dumps(doc).encode()
            except (ValueError, AttributeError, TypeError):
                pass  # not the list shape we know: pass it on as it is
        await send_json(send, 200, raw)
