"""The Responses API: POST /api/v1/responses, GET and DELETE /api/v1/responses/{id}.

Streams relay the upstream's `event:`/`data:` events untouched (the SSE relay's Responses
dialect); tokens are charged from `response.completed`'s usage, or from the body's.

Every tenant's requests go out under the one upstream key, so xAI alone would let any tenant
read, delete or continue any stored response. `OwnedResponses` names the id a request touches
(`{id}` in the path, or `previous_response_id`) before the limiter; the limiter's admission
refuses it, as 404 `not_found`, unless the key's tenant created it through this gateway. The
answer is the same as for an id that does not exist, and the upstream is never called.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.asgi import send_json
from service.http.context import RequestContext
from service.http.errors import ApiError, response_not_found
from service.routes.base import UpstreamRoute
from service.routes.upstream_calls import call_json, call_stream, with_upstream_model
from service.sse import ResponsesDialect

RESPONSES_PATH = "responses"
# xAI's ids are `resp_` and hex or a UUID; anything outside this shape cannot be one.
_RESPONSE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class OwnedResponses:
    """Before the limiter: name the stored response this request touches, for its check.

    An id that cannot be a response id is answered as unknown at once (404, nothing spent).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        response_id = scope.get("path_params", {}).get("response_id")
        if response_id is None and ctx.payload is not None:
            response_id = ctx.payload.get("previous_response_id")
        if response_id is not None:
            if not _RESPONSE_ID.match(response_id):
                ctx.reason = "not_found"
                await response_not_found(response_id[:128]).send(send)
                return
            ctx.owner_check = response_id
        await self.app(scope, receive, send)


class _ResponsesRoute(UpstreamRoute):
    """The upstream's own 404 for the id a request names (`ctx.owner_check`) gets the gateway's
    one answer, so that an id the upstream expired reads exactly like another tenant's."""

    async def refuse(self, scope: Scope, ctx: RequestContext, error: ApiError, send: Send) -> None:
        if ctx.owner_check is not None and error.status == 404:
            error = response_not_found(ctx.owner_check)
        await super().refuse(scope, ctx, error, send)


class CreateResponse(_ResponsesRoute):
    """POST /api/v1/responses, streamed through or answered whole."""

    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        body = ctx.payload
        assert body is not None
        upstream_body = with_upstream_model(ctx, body)
        stored = body.get("store") is not False
        if body.get("stream") is True:
            await self._stream(ctx, upstream_body, stored, receive, send)
            return
        raw = await call_json(self.services, ctx, receive, "POST", RESPONSES_PATH, upstream_body)
        if stored:
            ctx.response_id = _response_id(raw)
        await send_json(send, 200, raw)

    async def _stream(
        self,
        ctx: RequestContext,
        upstream_body: dict[str, Any],
        stored: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        result = await call_stream(
            self.services, ctx, receive, send, RESPONSES_PATH, upstream_body, ResponsesDialect()
        )
        if stored and result.completed:
            ctx.response_id = result.response_id


class StoredResponse(_ResponsesRoute):
    """GET or DELETE /api/v1/responses/{id}: a stored response of the key's tenant."""

    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        method = scope["method"]
        response_id = scope["path_params"]["response_id"]
        path = f"{RESPONSES_PATH}/{response_id}"
        raw = await call_json(self.services, ctx, receive, method, path, None)
        if method == "DELETE":
            ctx.deleted_response = response_id
        await send_json(send, 200, raw)


def _response_id(raw: bytes) -> str | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    response_id = doc.get("id") if isinstance(doc, dict) else None
    return response_id if isinstance(response_id, str) and _RESPONSE_ID.match(response_id) else None
