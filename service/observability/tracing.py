"""OpenTelemetry traces and metrics in the GenAI semantic conventions, exported over OTLP/HTTP.

Imported only when an OTLP endpoint is set (`Settings.otel_traces` / `otel_metrics`): without
one, the gateway never imports it and a request pays one `if` in the observe middleware.

Spans are made after the fact, from the same request context the access log is written from
and at the same point (`ObserveMiddleware._record`), with the request's real start and end
times: one SERVER span per API request, named `"{gen_ai.operation.name} {model}"`, its parent
the caller's W3C `traceparent` (through the SDK's propagators, `OTEL_PROPAGATORS`), and a
CLIENT child span per upstream attempt, timed by `TracedTransport`. No attribute holds a prompt,
a completion or a key: only names, counts, statuses and the cost.

The SDK reads the standard variables itself: `OTEL_SERVICE_NAME` (default here:
`grok-gateway`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_*` (endpoint, headers,
timeout, compression, certificates), `OTEL_TRACES_SAMPLER*`, `OTEL_BSP_*`,
`OTEL_METRIC_EXPORT_INTERVAL`. Made by `service.app.create_app` (its export threads start
then); the app's lifespan calls `shutdown()` at its end, which flushes what is queued.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import Histogram
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__
from service.usage.record import ticks_to_usd

if TYPE_CHECKING:
    from service.http.context import RequestContext
    from service.usage.record import Usage

log = logging.getLogger("service")

DEFAULT_SERVICE_NAME = "grok-gateway"
PROVIDER = "x_ai"  # gen_ai.provider.name's well-known value for xAI
SHUTDOWN_SECONDS = 5.0  # longest wait at shutdown for the last exports

# The GenAI conventions' advised buckets.
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                     40.96, 81.92)  # fmt: skip
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                 5.0, 7.5, 10.0)  # fmt: skip
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864)  # fmt: skip

# gen_ai.operation.name by (method, path below the API prefix); other API requests (model
# lists, usage, stored responses, admin) get HTTP-style spans named "{method} {route}".
_OPERATIONS = {
    ("POST", "chat/completions"): "chat",
    ("POST", "vision/analyze"): "chat",
    ("POST", "responses"): "chat",
    ("POST", "images/generate"): "generate_content",
    ("POST", "images/generations"): "generate_content",
}
_API_PREFIXES = ("/api/v1/", "/v1/")


@dataclass(slots=True)
class UpstreamAttempt:
    """One upstream HTTP request, as the CLIENT span tells it."""

    method: str
    url: httpx.URL
    started_ns: int
    ended_ns: int = 0  # 0 until the response is closed (or failed)
    status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class TraceRecord:
    """What tracing keeps of one request beyond its RequestContext: its upstream attempts."""

    attempts: list[UpstreamAttempt] = field(default_factory=list)


_CURRENT: contextvars.ContextVar[TraceRecord | None] = contextvars.ContextVar(
    "gateway_trace", default=None
)


class _HeaderGetter(Getter[Scope]):
    """The propagators' view of an ASGI scope's headers (names are lower-case bytes)."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.lower().encode()
        values = [v.decode("latin-1") for k, v in carrier.get("headers", ()) if k == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier.get("headers", ())]


_GETTER = _HeaderGetter()


def operation_of(method: str, path: str) -> str | None:
    """The request's gen_ai.operation.name, or None for a request that generates nothing."""
    for prefix in _API_PREFIXES:
        if path.startswith(prefix):
            return _OPERATIONS.get((method, path[len(prefix) :].rstrip("/")))
    return None


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or scope["path"]


def _wall_ns(perf: float, now_perf: float, now_ns: int) -> int:
    """A perf_counter() reading as Unix-epoch nanoseconds."""
    return now_ns - int((now_perf - perf) * 1e9)


class _Resource(Resource):
    """A Resource whose hash is computed once. The OTLP encoders group every exported span by
    its resource in a dict, and the SDK's `Resource.__hash__` serialises all the attributes to
    JSON each time: this process has one resource, immutable, so one hash does for all."""

    def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    @classmethod
    def of(cls, resource: Resource) -> _Resource:
        return cls(resource.attributes, resource.schema_url)

    def __hash__(self) -> int:
        return self._hash


class Tracing:
    """The SDK's providers and the gateway's instruments; records one request at a time."""

    def __init__(self, traces: bool, metrics: bool) -> None:
        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        # Ours only where those say nothing: a name, this version, and an id per process, so
        # replicas and workers are told apart.
        defaults = {"service.version": __version__, "service.instance.id": str(uuid.uuid4())}
        missing = {k: v for k, v in defaults.items() if k not in resource.attributes}
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            missing[SERVICE_NAME] = DEFAULT_SERVICE_NAME
        resource = _Resource.of(resource.merge(Resource(missing)))
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._duration: Histogram | None = None
        self._ttft: Histogram | None = None
        self._tokens: Histogram | None = None
        if traces:
            # Not at exit: `shutdown()` does it, bounded (the SDK's own hook would wait on a
            # collector that is down).
            self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            self._tracer = self.tracer_provider.get_tracer("grok-gateway", __version__)
        if metrics:
            reader = PeriodicExportingMetricReader(OTLPMetricExporter())
            self.meter_provider = MeterProvider(
                resource=resource, metric_readers=[reader], shutdown_on_exit=False
            )
            meter = self.meter_provider.get_meter("grok-gateway", __version__)
            self._duration = meter.create_histogram(
                "gen_ai.server.request.duration",
                unit="s",
                description="Generative AI server request duration",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
            self._ttft = meter.create_histogram(
                "gen_ai.server.time_to_first_token",
                unit="s",
                description="Time to generate the first token, for successful responses",
                explicit_bucket_boundaries_advisory=_TTFT_BUCKETS,
            )
            self._tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Input and output tokens used",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            )

    def scope(self, app: ASGIApp) -> ASGIApp:
        """Wrap the app inside the observe middleware: each API request gets a TraceRecord
        that the upstream calls it makes (`TracedTransport`) add their attempts to."""
        return _TraceScope(app)

    def transport(self, transport: Any) -> Any:
        """The upstreams' shared transport, each request through it timed for a CLIENT span
        (only with traces on)."""
        return TracedTransport(transport) if self._tracer is not None else transport

    def record(self, scope: Scope, ctx: RequestContext, status: int, duration: float) -> None:
        """Export what the access log says of this request: its span and its measures."""
        try:
            self._record(scope, ctx, status, duration)
        except Exception:  # telemetry never fails a request, nor floods the log per request
            log.debug("could not record the request's telemetry", exc_info=True)

    def _record(self, scope: Scope, ctx: RequestContext, status: int, duration: float) -> None:
        method = scope["method"]
        operation = operation_of(method, scope["path"])
        response_id, response_model = _answer_identity(ctx) if status < 400 else (None, None)
        if self._duration is not None and operation is not None:
            self._measure(operation, response_model, ctx, status, duration)
        if self._tracer is None:
            return
        now_perf, now_ns = perf_counter(), time.time_ns()
        if operation is not None:
            name = f"{operation} {ctx.model}" if ctx.model else operation
        else:
            name = f"{method} {_route_of(scope)}"
        span = self._tracer.start_span(
            name,
            context=propagate.extract(scope, getter=_GETTER),
            kind=SpanKind.SERVER,
            start_time=_wall_ns(ctx.started, now_perf, now_ns),
        )
        if span.is_recording():  # the sampler kept it: only then are attributes made
            span.set_attributes(
                self._server_attributes(method, operation, response_id, response_model, ctx, status)
            )
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            record = ctx.trace
            if isinstance(record, TraceRecord) and record.attempts:
                within = trace.set_span_in_context(span, Context())
                for attempt in record.attempts:
                    self._client_span(attempt, within, operation, ctx, now_ns)
        span.end(end_time=now_ns)

    @staticmethod
    def _server_attributes(
        method: str,
        operation: str | None,
        response_id: str | None,
        response_model: str | None,
        ctx: RequestContext,
        status: int,
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "http.response.status_code": status,
            "gateway.request_id": ctx.request_id,  # joins the span to the access-log line
        }
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.provider.name"] = PROVIDER
            if ctx.model:
                attributes["gen_ai.request.model"] = ctx.model
            if response_model:
                attributes["gen_ai.response.model"] = response_model
            if response_id:
                attributes["gen_ai.response.id"] = response_id
            usage = ctx.usage
            if usage is not None:
                attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
                attributes["gen_ai.usage.output_tokens"] = _output_tokens(usage)
                if usage.estimated:  # no usage arrived: the gateway's estimate, as charged
                    attributes["gateway.usage_estimated"] = True
        if status >= 400:
            attributes["error.type"] = ctx.reason or str(status)
        key = ctx.key
        if key is not None:
            attributes["gateway.key_id"] = key.id
            if key.tenant is not None:
                attributes["gateway.tenant"] = key.tenant
        elif ctx.admin is not None:
            attributes["gateway.key_id"] = ctx.admin.id
        if ctx.cost_ticks is not None:
            attributes["gateway.cost_usd"] = ticks_to_usd(ctx.cost_ticks)
        if ctx.reason is not None:
            attributes["gateway.refusal_reason"] = ctx.reason
        if ctx.upstream is not None:
            attributes["gateway.upstream"] = ctx.upstream  # the pool member that answered
        return attributes

    def _client_span(
        self,
        attempt: UpstreamAttempt,
        within: Context,
        operation: str | None,
        ctx: RequestContext,
        now_ns: int,
    ) -> None:
        assert self._tracer is not None
        url = attempt.url
        attributes: dict[str, Any] = {
            "http.request.method": attempt.method,
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "url.full": str(url),  # the upstream base URL and a path: no query, no key
        }
        if operation is not None:
            model = ctx.catalog.upstream_name(ctx.model) if ctx.catalog and ctx.model else ctx.model
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.provider.name"] = PROVIDER
            if model:
                attributes["gen_ai.request.model"] = model  # as the upstream was asked
            name = f"{operation} {model}" if model else operation
        else:
            name = attempt.method
        if attempt.status is not None:
            attributes["http.response.status_code"] = attempt.status
        failed = attempt.error is not None or (attempt.status or 0) >= 400
        if failed:
            attributes["error.type"] = attempt.error or str(attempt.status)
        span = self._tracer.start_span(
            name,
            context=within,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=attempt.started_ns,
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=attempt.ended_ns or now_ns)

    def _measure(
        self,
        operation: str,
        response_model: str | None,
        ctx: RequestContext,
        status: int,
        duration: float,
    ) -> None:
        assert self._duration is not None and self._ttft is not None and self._tokens is not None
        common: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER,
        }
        if ctx.model:
            common["gen_ai.request.model"] = ctx.model
        if response_model:
            common["gen_ai.response.model"] = response_model
        if status >= 400:
            common["error.type"] = ctx.reason or str(status)
            self._duration.record(duration, common)
            return
        self._duration.record(duration, common)
        if ctx.ttfb is not None:
            self._ttft.record(ctx.ttfb, common)
        usage = ctx.usage
        if usage is not None and not usage.estimated:
            self._tokens.record(usage.input_tokens, {**common, "gen_ai.token.type": "input"})
            self._tokens.record(_output_tokens(usage), {**common, "gen_ai.token.type": "output"})

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Send what is queued and stop the export threads, both signals at once, waiting
        `timeout` seconds at most: a collector that is down must not hold up the exit (the
        exporter retries for its own timeout, per signal)."""
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p is not None]
        threads = [
            threading.Thread(target=_shut, args=(p,), name="otel-shutdown", daemon=True)
            for p in providers
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            log.warning(
                "OpenTelemetry: the collector took more than %gs at shutdown; "
                "the spans and metrics still queued are dropped",
                timeout,
            )


def _shut(provider: TracerProvider | MeterProvider) -> None:
    try:
        provider.shutdown()
    except Exception:
        log.warning("OpenTelemetry export did not shut down cleanly", exc_info=True)


def _output_tokens(usage: Usage) -> int:
    """Output as the conventions count it: reasoning included (the usage keeps it apart)."""
    return usage.output_tokens + usage.reasoning_tokens


def _answer_identity(ctx: RequestContext) -> tuple[str | None, str | None]:
    """The upstream answer's id and model: from its JSON, or from the relayed stream."""
    answer = ctx.answer
    if isinstance(answer, dict):
        response_id, model = answer.get("id"), answer.get("model")
    elif ctx.stream_dialect is not None:
        response_id, model = ctx.stream_dialect.identity()
    else:
        return None, None
    return (
        response_id if isinstance(response_id, str) else None,
        model if isinstance(model, str) else None,
    )


class _TraceScope:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = scope["gateway"].trace = TraceRecord()
        token = _CURRENT.set(record)
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(token)


class TracedTransport(httpx.AsyncBaseTransport):
    """The upstreams' transport with each request of an API request noted as an
    UpstreamAttempt: started when sent, ended when its response is closed (its body read or
    the stream cut). Requests outside one (the key-status polls) pass untouched."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        record = _CURRENT.get()
        if record is None:
            return await self._transport.handle_async_request(request)
        attempt = UpstreamAttempt(request.method, request.url, time.time_ns())
        record.attempts.append(attempt)
        try:
            response = await self._transport.handle_async_request(request)
        except BaseException as exc:
            attempt.ended_ns = time.time_ns()
            attempt.error = type(exc).__name__
            raise
        attempt.status = response.status_code
        response.stream = _TimedStream(response.stream, attempt)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


class _TimedStream(httpx.AsyncByteStream):
    """The response's byte stream, its close timed; iterating it is the inner stream's own
    iterator (no layer per chunk)."""

    def __init__(self, stream: Any, attempt: UpstreamAttempt) -> None:
        self._stream = stream
        self._attempt = attempt

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        if not self._attempt.ended_ns:
            self._attempt.ended_ns = time.time_ns()
        await self._stream.aclose()
