"""Upstream calls shared by the routes: non-streaming (`call_json`: call, check, charge usage)
and streamed (`call_stream`: call, relay, charge usage).

Also the model rewrite every route applies: the key file's `[models.aliases]` turn the name a
client sent into the one the upstream serves, in the upstream body only (allow-lists, logs and
the ledger keep the client's name).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive, Send

from service.deps import Services
from service.http.context import RequestContext
from service.http.errors import ApiError
from service.http.json_codec import dumps_compact
from service.server.disconnect import ClientDisconnected, cancelled_on_disconnect
from service.sse import Dialect, RelayResult, relay_sse
from service.upstream.body import read_json_object
from service.upstream.call import EVENT_STREAM, JSON
from service.upstream.errors import UpstreamError
from service.upstream.pool import Member, open_in_pool
from service.usage.record import Usage, estimated_usage, parse_usage

STREAM_FALLBACK = (b"x-stream-fallback", b"true")


def with_upstream_model(ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its model aliased for the upstream (the same dict if nothing changes)."""
    model = body.get("model")
    if ctx.catalog is None or not isinstance(model, str):
        return body
    upstream_model = ctx.catalog.upstream_name(model)
    return body if upstream_model == model else {**body, "model": upstream_model}


async def call_json(
    services: Services,
    ctx: RequestContext,
    receive: Receive,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> bytes:
    """Make a non-streaming upstream call and return its JSON object's bytes; charge its usage.

    The answer must be a JSON object within UPSTREAM_MAX_RESPONSE_BYTES, else ApiError 502.
    Raises ClientDisconnected (the upstream call cancelled, an estimate charged) when the
    client goes away first.
    """
    content = dumps_compact(body) if body is not None else None
    policy = services.upstream_policy

    def hold(size: int) -> None:  # an answer read whole counts against the bodies in flight
        ctx.held_bytes += services.inflight.take(size, ctx.body_owner())

    member: Member | None = None
    try:
        async with cancelled_on_disconnect(receive):
            response, member = await _open(services, ctx, method, path, content, JSON)
            raw, doc = await read_json_object(response, policy.max_response_bytes, hold)
    except ClientDisconnected:
        # The upstream may have spent the prompt already: charge that much, as streams do.
        ctx.usage = estimated_usage(ctx.body_size, 0)
        raise
    finally:
        if member is not None:
            member.in_flight -= 1
    ctx.usage = parse_usage(doc.get("usage")) or Usage()
    ctx.answer = doc
    return raw


async def _open(
    services: Services,
    ctx: RequestContext,
    method: str,
    path: str,
    content: bytes | None,
    accept: bytes,
) -> tuple[Any, Member]:
    """Open the call on an upstream the key's tenant may use (the one `ctx.pinned_upstream`
    names, for stored objects); `ctx.upstream` names the one that answered."""
    assert services.pool is not None
    key = ctx.key
    tenant = key.tenant if key is not None else None
    extra = ((b"x-grok-conv-id", ctx.conversation),) if ctx.conversation else ()
    try:
        response, member = await open_in_pool(
            services.pool,
            tenant,
            ctx.pinned_upstream,
            method,
            path,
            services.upstream_policy,
            content,
            accept,
            extra,
            ctx.conversation,
        )
    except UpstreamError as error:
        ctx.upstream = error.upstream  # the access log names the one that failed
        raise
    ctx.upstream = member.name
    return response, member


async def call_stream(
    services: Services,
    ctx: RequestContext,
    receive: Receive,
    send: Send,
    path: str,
    body: dict[str, Any],
    dialect: Dialect,
) -> RelayResult:
    """Open an upstream stream and relay it to the client in `dialect`; charge its usage.

    No usage arrived (the client left, the upstream dropped): an estimate of what was spent is
    charged rather than nothing — ~4 bytes a prompt token, ~1 token an event.
    """
    content = dumps_compact(body)
    upstream, member = await _open(services, ctx, "POST", path, content, EVENT_STREAM)
    settings = services.settings
    try:
        result = await relay_sse(
            upstream,
            receive,
            send,
            services.streams,
            dialect,
            idle_timeout=settings.idle_timeout,
            max_event_bytes=settings.sse_max_event_bytes,
        )
    finally:
        member.in_flight -= 1
    ctx.usage = result.usage or estimated_usage(ctx.body_size, result.events)
    ctx.stream_dialect = dialect
    if result.disconnected:
        ctx.reason = "client_disconnected"
    return result


def parse_completion(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ApiError(
            502,
            "The upstream sent a malformed completion.",
            code="upstream_error",
            type="server_error",
        )
    return doc
