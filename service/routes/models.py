"""GET /api/v1/models: the upstream's model list, with the key file's aliases, filtered to the
key's allow-list; GET /api/v1/models/{id}: one entry of that list (`client.models.retrieve`).

An alias whose target the upstream lists is listed too (the target's entry under the alias's
name), so a client that lists models sees the names it may send, and can retrieve each. One
model is looked up in the list (one upstream call, as for the list): the simulator and
OpenAI-compatible test doubles serve the list only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.asgi import send_json
from service.http.context import RequestContext
from service.http.errors import ApiError
from service.routes.base import UpstreamRoute
from service.routes.upstream_calls import call_json


class ListModels(UpstreamRoute):
    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        raw = await call_json(self.services, ctx, receive, "GET", "models", None)
        aliases = ctx.catalog.aliases if ctx.catalog is not None else {}
        allowed = ctx.key.models if ctx.key is not None else None
        if aliases or allowed is not None:
            doc = json.loads(raw)  # call_json checked it is a JSON object
            data = doc.get("data")
            if isinstance(data, list):
                doc["data"] = _listed(data, aliases, allowed)
                raw = json.dumps(doc).encode()
        await send_json(send, 200, raw)


class AllowedModel:
    """Before the limiter: a model the key may not use is answered 404 at once, spending
    nothing and asking the upstream nothing (the same answer as a model that does not exist)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        model_id = scope["path_params"]["model_id"]
        allowed = ctx.key.models if ctx.key is not None else None
        if allowed is not None and model_id not in allowed:
            ctx.reason = "model_not_found"
            await _model_not_found(model_id).send(send)
            return
        await self.app(scope, receive, send)


class RetrieveModel(UpstreamRoute):
    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        model_id = scope["path_params"]["model_id"]
        allowed = ctx.key.models if ctx.key is not None else None
        raw = await call_json(self.services, ctx, receive, "GET", "models", None)
        data = json.loads(raw).get("data")  # call_json checked it is a JSON object
        aliases = ctx.catalog.aliases if ctx.catalog is not None else {}
        listed = _listed(data, aliases, allowed) if isinstance(data, list) else []
        for model in listed:
            if model.get("id") == model_id:
                await send_json(send, 200, json.dumps(model).encode())
                return
        raise _model_not_found(model_id)


def _model_not_found(model_id: str) -> ApiError:
    return ApiError(
        404,
        f"The model {model_id[:128]!r} does not exist or this key may not use it.",
        code="model_not_found",
        param="model",
    )


def _listed(
    data: list[Any], aliases: Mapping[str, str], allowed: frozenset[str] | None
) -> list[Any]:
    models = [m for m in data if isinstance(m, dict)]
    names = {m.get("id") for m in models}
    by_name = {m.get("id"): m for m in models}
    for alias, target in aliases.items():
        if alias not in names and target in by_name:
            models.append({**by_name[target], "id": alias})
    if allowed is None:
        return models
    return [m for m in models if m.get("id") in allowed]
