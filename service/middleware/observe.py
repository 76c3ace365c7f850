"""Outermost middleware: request id, drain refusal, one JSON access-log line, metrics.

It wraps `send` once for the whole stack: it sees the status, stamps the time to first byte,
and appends the headers other layers queued in the request context (rate-limit state,
X-Stream-Fallback) plus X-Request-ID. Anything that escapes the app becomes an
OpenAI-shaped 500 (or ends the stream); the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging
import random
import re
from time import perf_counter
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.asgi import header
from service.http.context import RequestContext
from service.http.errors import ApiError
from service.http.json_codec import dumps_log_line
from service.observability import metrics
from service.observability.logging import log_access
from service.server.disconnect import ClientDisconnected
from service.server.inflight import InFlight
from service.server.lifecycle import Lifecycle
from service.usage.record import ticks_to_usd

if TYPE_CHECKING:
    from service.observability.tracing import Tracing

access_log = logging.getLogger("service.access")
log = logging.getLogger("service")

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def _request_id(scope: Scope) -> str:
    given = header(scope, b"x-request-id")
    if given is not None and _REQUEST_ID.match(given):
        return given.decode()
    return f"{random.getrandbits(96):024x}"  # no system call, unlike os.urandom


class ObserveMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        lifecycle: Lifecycle,
        inflight: InFlight,
        log_prompts: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.inflight = inflight
        self.log_prompts = log_prompts
        self.tracing = tracing  # OpenTelemetry, when an OTLP endpoint is set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext(request_id=_request_id(scope), started=perf_counter())
        scope["gateway"] = ctx
        request_id_header = (b"x-request-id", ctx.request_id.encode())

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    request_id_header,
                    *ctx.response_headers,
                ]
            elif ctx.ttfb is None:
                ctx.ttfb = perf_counter() - ctx.started
            await send(message)

        api = scope["path"].startswith(("/api/", "/admin/"))
        try:
            if api and self.lifecycle.draining:
                ctx.reason = "shutting_down"
                await ApiError(
                    503,
                    "This replica is shutting down; retry the request.",
                    code="server_shutting_down",
                    type="server_error",
                    headers=[(b"connection", b"close"), (b"retry-after", b"1")],
                ).send(observed_send)
                return
            await self.app(scope, receive, observed_send)
        except ClientDisconnected:
            ctx.reason = "client_disconnected"  # nobody to answer; logged with status 499
        except Exception:
            log.exception("unhandled error in request %s", ctx.request_id)
            if ctx.status == 0:
                ctx.reason = ctx.reason or "internal_error"
                await ApiError(
                    500,
                    f"Internal gateway error (request id {ctx.request_id}).",
                    code="internal_error",
                    type="server_error",
                ).send(observed_send)
        finally:
            if ctx.held_bytes:  # the bodies it held (read, or an upstream answer read whole)
                self.inflight.give(ctx.held_bytes, ctx.body_owner())
            if api:
                self._record(scope, ctx)

    def _record(self, scope: Scope, ctx: RequestContext) -> None:
        duration = perf_counter() - ctx.started
        key = ctx.key
        key_id = key.id if key is not None else ctx.admin.id if ctx.admin is not None else None
        status = ctx.status or 499  # the client went away before any response
        metrics.labelled(metrics.REQUESTS, key_id or "-", str(status)).inc()
        if ctx.reason is not None:
            metrics.REJECTIONS.labels(ctx.reason).inc()
        if ctx.ttfb is not None:
            metrics.TTFB.observe(ctx.ttfb)
        metrics.DURATION.observe(duration)
        if self.tracing is not None:  # the span and GenAI metrics, from what the log says
            self.tracing.record(scope, ctx, status, duration)
        if not access_log.isEnabledFor(logging.INFO):
            return
        usage = ctx.usage
        line: dict[str, Any] = {
            "request_id": ctx.request_id,
            "method": scope["method"],
            "path": scope["path"],
            "key_id": key_id,
            "tenant": key.tenant if key is not None else None,
            "model": ctx.model,
            "status": status,
            "stream": ctx.stream,
            "ttfb_ms": round(ctx.ttfb * 1000, 2) if ctx.ttfb is not None else None,
            "duration_ms": round(duration * 1000, 2),
            "tokens": usage.total_tokens if usage is not None else 0,
            "cached_tokens": usage.cached_input_tokens if usage is not None else 0,
            "upstream": ctx.upstream,
            "reason": ctx.reason,
        }
        if ctx.admin is not None:
            line["admin"] = True
        if usage is not None and usage.estimated:
            line["tokens_estimated"] = True
        if ctx.cost_ticks is not None:
            line["cost_usd"] = ticks_to_usd(ctx.cost_ticks)
            if not ctx.cost_known:
                line["cost_unknown"] = True
        if ctx.stream_fallback:
            line["stream_fallback"] = True
        if self.log_prompts and ctx.payload is not None:
            line["prompt"] = ctx.payload.get("messages") or ctx.payload.get("prompt")
        log_access(dumps_log_line(line))
