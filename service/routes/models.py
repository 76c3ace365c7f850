"""GET /api/v1/models: the upstream's model list, with the key file's aliases, filtered to the
key's allow-list.

An alias whose target the upstream lists is listed too (the target's entry under the alias's
name), so a client that lists models sees the names it may send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from service.http.asgi import send_json
from service.http.context import RequestContext
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
