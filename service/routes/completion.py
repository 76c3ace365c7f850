"""Non-streaming upstream calls shared by chat, vision and images: call, read, charge tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
from starlette.types import Receive

from service.context import RequestContext
from service.deps import Services
from service.disconnect import ClientDisconnected, cancelled_on_disconnect
from service.errors import ApiError
from service.upstream.call import open_upstream
from service.upstream.errors import upstream_unreachable
from service.usage.record import Usage, estimated_usage, parse_usage

STREAM_FALLBACK = (b"x-stream-fallback", b"true")


async def call_json(
    services: Services,
    ctx: RequestContext,
    receive: Receive,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> bytes:
    """Make a non-streaming upstream call and return its JSON body; charge its usage.

    Raises ClientDisconnected (the upstream call cancelled, an estimate charged) when the
    client goes away first.
    """
    assert services.upstream is not None
    content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
    try:
        async with cancelled_on_disconnect(receive):
            response = await open_upstream(
                services.upstream, method, path, services.upstream_policy, content
            )
            try:
                raw = await response.aread()
            except httpx.HTTPError as exc:
                message = f"reading the response failed ({type(exc).__name__})"
                raise upstream_unreachable(message) from None
            finally:
                await response.aclose()
    except ClientDisconnected:
        # The upstream may have spent the prompt already: charge that much, as streams do.
        ctx.usage = estimated_usage(ctx.body_size, 0)
        raise
    ctx.usage = _usage(raw)
    return raw


def _usage(raw: bytes) -> Usage:
    if b'"usage"' not in raw:
        return Usage()
    try:
        doc = json.loads(raw)
    except ValueError:
        return Usage()
    return (parse_usage(doc.get("usage")) if isinstance(doc, dict) else None) or Usage()


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
