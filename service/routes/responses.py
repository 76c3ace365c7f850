"""The Responses API: POST /api/v1/responses, GET and DELETE /api/v1/responses/{id}.

Streams relay the upstream's `event:`/`data:` events untouched (the SSE relay's Responses
dialect); tokens are charged from `response.completed`'s usage, or from the body's.

Every tenant's requests go out under the one upstream key, so xAI alone would let any tenant
read, delete or continue any stored object. `OwnedResponses` names every stored id a request
touches (`{id}` in the path, `previous_response_id`, each `input` item of type
`item_reference`, `conversation`) before the limiter; the limiter's admission refuses it, as
404 `not_found`, unless the key's tenant created it through this gateway: a response and the
ids of its output items are recorded when the response ends. The answer is the same as for
an id that does not exist, and the upstream is never called.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.asgi import send_json
from service.http.context import RequestContext
from service.http.errors import ApiError, bad_request, response_not_found
from service.routes.base import UpstreamRoute
from service.routes.upstream_calls import call_json, call_stream, with_upstream_model
from service.sse import ResponsesDialect
from service.usage.record import Usage

RESPONSES_PATH = "responses"
# xAI's ids are a prefix (`resp_`, `msg_`, ...) and hex or a UUID; nothing else can be one.
_STORED_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_REFERENCES = 256  # stored ids one request may name


class OwnedResponses:
    """Before the limiter: name the stored objects this request touches, for its check.

    An id that cannot be a stored id is answered as unknown at once (404, nothing spent).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        named = _named(scope.get("path_params", {}).get("response_id"), ctx.payload)
        if len(named) > MAX_REFERENCES:
            ctx.reason = "invalid_request_error"
            await bad_request(
                f"A request may name at most {MAX_REFERENCES} stored responses, items and "
                f"conversations; this one names {len(named)}.",
                "input",
            ).send(send)
            return
        for object_id, kind in named:
            if not _STORED_ID.match(object_id):
                ctx.reason = "not_found"
                await response_not_found(object_id[:128], kind).send(send)
                return
        ctx.owned = tuple(object_id for object_id, _ in named)
        ctx.owned_kinds = dict(named)
        await self.app(scope, receive, send)


def _named(path_id: str | None, body: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The stored ids a request names, each with its kind, in the order they appear."""
    if path_id is not None:
        return [(path_id, "response")]
    if body is None:
        return []
    named = []
    if isinstance(body.get("previous_response_id"), str):
        named.append((body["previous_response_id"], "response"))
    items = body.get("input")
    if isinstance(items, list):
        named += [
            (item["id"], "item")
            for item in items
            if isinstance(item, dict) and item.get("type") == "item_reference"
        ]
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if isinstance(conversation, str):
        named.append((conversation, "conversation"))
    return named


class _ResponsesRoute(UpstreamRoute):
    """The upstream's own 404 for a request that names stored ids (`ctx.owned`) gets the
    gateway's one answer, so that an id the upstream expired reads exactly like another
    tenant's."""

    async def refuse(self, scope: Scope, ctx: RequestContext, error: ApiError, send: Send) -> None:
        if ctx.owned and error.status == 404:
            error = response_not_found(ctx.owned[0], ctx.owned_kinds.get(ctx.owned[0], "response"))
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
            ctx.response_id, ctx.item_ids = stored_ids(raw)
        await send_json(send, 200, raw)

    async def _stream(
        self,
        ctx: RequestContext,
        upstream_body: dict[str, Any],
        stored: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        dialect = ResponsesDialect()
        result = await call_stream(
            self.services, ctx, receive, send, RESPONSES_PATH, upstream_body, dialect
        )
        if stored and result.completed and result.response_id is not None:
            ctx.response_id = result.response_id
            ctx.item_ids = _item_ids(dialect.final_response())


class StoredResponse(_ResponsesRoute):
    """GET or DELETE /api/v1/responses/{id}: a stored response of the key's tenant."""

    async def answer(self, scope: Scope, ctx: RequestContext, receive: Receive, send: Send) -> None:
        method = scope["method"]
        response_id = scope["path_params"]["response_id"]
        path = f"{RESPONSES_PATH}/{response_id}"
        raw = await call_json(self.services, ctx, receive, method, path, None)
        ctx.usage = Usage()  # the stored response's usage was charged when it was made
        if method == "DELETE":
            ctx.deleted_response = response_id
        await send_json(send, 200, raw)


def stored_ids(raw: bytes) -> tuple[str | None, tuple[str, ...]]:
    """A stored response's id and its output items' ids, from its JSON."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None, ()
    if not isinstance(doc, dict):
        return None, ()
    response_id = doc.get("id")
    if not isinstance(response_id, str) or not _STORED_ID.match(response_id):
        return None, ()
    return response_id, _item_ids(doc)


def _item_ids(response: dict[str, Any] | None) -> tuple[str, ...]:
    """The ids of a response's output items (each a stored item the tenant may reference)."""
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return ()
    ids = [item.get("id") for item in output if isinstance(item, dict)]
    return tuple(i for i in ids if isinstance(i, str) and _STORED_ID.match(i))[:MAX_REFERENCES]
