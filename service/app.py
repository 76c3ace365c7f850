"""Assemble the gateway: the request's path reads top to bottom.

    ObserveMiddleware (request id, drain refusal, access log, metrics)
    └─ Router (fixed paths found by one dict lookup)
       ├─ /healthz /readyz /metrics                           no key
       ├─ /api/v1/...  Auth → Body (size, JSON, validation) → [Owned, Affinity] → RateLimit
       │               → route → upstream pool (also served as /v1/..., OpenAI's base path)
       ├─ /api/v1/usage  Auth → route                         reads budgets, spends none
       └─ /admin/v1/...  Auth (admin keys only) → route       no tenant budgets
          (usage, keys, tenants, audit: routes/admin/; keys live in registry/store.py)

Each API route gets its own middleware chain (the body validator differs per route), so the
limiter only ever sees authenticated, well-formed requests: bad input spends nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import Services
from service.http import validation
from service.http.asgi import send_json
from service.http.errors import error_body
from service.limiter import create_ledger, create_limiter
from service.middleware.affinity import ConversationAffinity
from service.middleware.auth import AuthMiddleware
from service.middleware.body import BodyMiddleware
from service.middleware.misconfigured import RefuseWhileMisconfigured
from service.middleware.observe import ObserveMiddleware
from service.middleware.ratelimit import RateLimitMiddleware
from service.registry.follow import StoreFollower
from service.registry.keys import KeyRegistry
from service.registry.reload import RegistryHolder
from service.registry.store import KeyStore, MemoryKeyStore, RedisKeyStore
from service.routes.admin import AdminUsage, Audit, Key, Keys, RotateKey, Tenant, Tenants
from service.routes.chat import ChatCompletions
from service.routes.console import Console
from service.routes.health import Healthz, Metrics, Readyz
from service.routes.images import ImageGeneration
from service.routes.models import AllowedModel, ListModels, RetrieveModel
from service.routes.responses import CreateResponse, OwnedResponses, StoredResponse
from service.routes.status import AdminStatus
from service.routes.usage import KeyUsage
from service.routes.vision import VisionAnalyze
from service.server.inflight import InFlight
from service.settings import Settings
from service.sse import StreamSet
from service.upstream.client import shared_transport
from service.upstream.pool import UpstreamPool
from service.usage.ledger import MemoryLedger

if TYPE_CHECKING:
    from service.observability.tracing import Tracing

log = logging.getLogger("service")


class JsonRoute(Route):
    """A Route whose wrong-method answer is an OpenAI-shaped 405 (Starlette's is plain text)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allow = ", ".join(sorted(self.methods))
            body = error_body(
                f"Method {scope['method']} is not allowed on {scope['path']}; use {allow}.",
                type="invalid_request_error",
                code="method_not_allowed",
            )
            await send_json(send, 405, body, [(b"allow", allow.encode())])
            return
        await super().handle(scope, receive, send)


class WithoutTrailingSlash:
    """Serve `/path/` as `/path` (the access log keeps the path as sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
            raw = scope.get("raw_path")
            if raw:
                scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


class OpenAIBasePath:
    """Serve `/v1/...` as `/api/v1/...`, for tools that assume OpenAI's base path: one prefix
    test per request, no second route table (the access log keeps the path as sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path.startswith("/v1/") or path == "/v1":
            scope = {**scope, "path": "/api" + path}
            raw = scope.get("raw_path")
            if raw:
                scope["raw_path"] = b"/api" + raw
        await self.app(scope, receive, send)


class FixedPaths:
    """Sends a request whose path is a fixed route's straight to it, by one dict lookup; the
    rest (the lifespan, paths with parameters, unknown paths) go through the Router."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.fixed = {
            route.path: route
            for route in router.routes
            if isinstance(route, Route) and not route.param_convertors
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.fixed.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.router(scope, receive, send)
        else:
            await route.handle(scope, receive, send)


def create_app(settings: Settings, registry: KeyRegistry) -> ASGIApp:
    """Build the ASGI app. Resources open in its lifespan and close when it ends."""
    memory_ledger = MemoryLedger(settings.usage_retention_days)
    holder = RegistryHolder(registry, settings.keys_file or None, settings.keys_reload_seconds)
    services = Services(
        settings=settings,
        limiter=create_limiter(
            settings.redis_url,
            failure_mode=settings.failure_mode,
            lease_seconds=settings.lease_seconds,
            redis_timeout=settings.redis_timeout,
            pool_size=settings.redis_pool_size,
            retention_days=settings.usage_retention_days,
            ledger=memory_ledger,
        ),
        ledger=create_ledger(settings.redis_url, memory_ledger, settings.redis_timeout),
        registry=holder,
        keys=StoreFollower(_key_store(settings), holder),
        streams=StreamSet(settings.keepalive_seconds),
        inflight=InFlight(settings.max_inflight_body_bytes),
    )

    def api(
        route: ASGIApp,
        validate: validation.Validator | None,
        guard: Callable[[ASGIApp], ASGIApp] | None = None,
        *,
        limited: bool = True,
        cost_free: bool = False,
    ) -> ASGIApp:
        app = route
        if limited:
            app = RateLimitMiddleware(route, services.limiter, cost_free=cost_free)
            app = RefuseWhileMisconfigured(app, services)  # a wrong XAI_BASE_URL spends nothing
        if guard is not None:  # sees the validated request before the limiter admits it
            app = guard(app)
        if validate is not None:
            app = BodyMiddleware(
                app, validate, services.inflight, settings.max_body_bytes, settings.body_timeout
            )
        return AuthMiddleware(app, services.registry)

    def admin(route: ASGIApp) -> ASGIApp:
        return AuthMiddleware(route, services.registry, admin=True)

    def affinity(app: ASGIApp) -> ASGIApp:
        return ConversationAffinity(app, derive=settings.cache_affinity)

    def responses_guard(app: ASGIApp) -> ASGIApp:
        return OwnedResponses(affinity(app))

    images = api(
        ImageGeneration(services),
        functools.partial(validation.image_generation, default_model=settings.default_image_model),
    )
    tracing = _tracing(settings)
    console = Console()
    routes = [
        JsonRoute(
            "/api/v1/chat/completions",
            api(ChatCompletions(services), validation.chat_completion, affinity),
            methods=["POST"],
        ),
        JsonRoute(
            "/api/v1/responses",
            api(CreateResponse(services), validation.response_request, responses_guard),
            methods=["POST"],
        ),
        JsonRoute("/api/v1/images/generate", images, methods=["POST"]),
        JsonRoute("/api/v1/images/generations", images, methods=["POST"]),
        JsonRoute(
            "/api/v1/vision/analyze",
            api(
                VisionAnalyze(services),
                functools.partial(
                    validation.vision_analysis, default_model=settings.default_vision_model
                ),
            ),
            methods=["POST"],
        ),
        JsonRoute("/api/v1/models", api(ListModels(services), None), methods=["GET"]),
        JsonRoute(
            "/api/v1/models/{model_id:path}",
            api(RetrieveModel(services), None, AllowedModel),
            methods=["GET"],
        ),
        # Spends nothing and must answer when the key's budgets are spent: no limiter.
        JsonRoute("/api/v1/usage", api(KeyUsage(services), None, limited=False), methods=["GET"]),
        JsonRoute("/admin/v1/usage", admin(AdminUsage(services)), methods=["GET"]),
        JsonRoute("/admin/v1/keys", admin(Keys(services)), methods=["GET", "POST"]),
        JsonRoute(
            "/admin/v1/keys/{key_id}", admin(Key(services)), methods=["GET", "PATCH", "DELETE"]
        ),
        JsonRoute("/admin/v1/keys/{key_id}/rotate", admin(RotateKey(services)), methods=["POST"]),
        JsonRoute("/admin/v1/tenants", admin(Tenants(services)), methods=["GET"]),
        JsonRoute(
            "/admin/v1/tenants/{tenant}", admin(Tenant(services)), methods=["GET", "PUT", "DELETE"]
        ),
        JsonRoute("/admin/v1/audit", admin(Audit(services)), methods=["GET"]),
        JsonRoute("/admin/v1/status", admin(AdminStatus(services)), methods=["GET"]),
        # The web console's static files: no key (the page asks for one), not under /api.
        JsonRoute("/console", console, methods=["GET", "HEAD"]),
        JsonRoute("/console/{name}", console, methods=["GET", "HEAD"]),
        JsonRoute(
            "/api/v1/responses/{response_id}",
            # Costs nothing upstream: a tenant out of money still reaches its data.
            api(StoredResponse(services), None, OwnedResponses, cost_free=True),
            methods=["GET", "DELETE"],
        ),
        JsonRoute("/healthz", Healthz(), methods=["GET", "HEAD"]),
        JsonRoute("/readyz", Readyz(services), methods=["GET", "HEAD"]),
        JsonRoute("/metrics", Metrics(), methods=["GET"]),
    ]
    # No redirects: Starlette's would send clients to the host their Host header names.
    router = Router(
        routes=routes,
        redirect_slashes=False,
        default=_not_found,
        lifespan=_lifespan(services, tracing),
    )
    inner: ASGIApp = OpenAIBasePath(WithoutTrailingSlash(FixedPaths(router)))
    if tracing is not None:
        inner = tracing.scope(inner)
    app = ObserveMiddleware(
        inner,
        services.lifecycle,
        services.inflight,
        log_prompts=settings.log_prompts,
        tracing=tracing,
    )
    app.services = services  # type: ignore[attr-defined]  # for the server's drain hook and tests
    app.router = router  # type: ignore[attr-defined]  # its lifespan, for in-process tests
    return app


def _key_store(settings: Settings) -> KeyStore:
    """The admin API's key store: Redis's with a URL (shared by the replicas), else memory."""
    if settings.redis_url is None:
        return MemoryKeyStore()
    from service.redis.connection import connect

    return RedisKeyStore(connect(settings.redis_url, settings.redis_timeout, 4))


def create_app_from_env() -> ASGIApp:
    """App factory for worker processes (GATEWAY_WORKERS > 1): settings from the environment."""
    from service.observability.logging import configure_logging
    from service.registry.keys import load_registry

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings, load_registry(settings.keys_file))


def _tracing(settings: Settings) -> Tracing | None:
    """OpenTelemetry when an OTLP endpoint is set; without one the gateway never imports it."""
    if not (settings.otel_traces or settings.otel_metrics):
        return None
    from service.observability.tracing import Tracing

    return Tracing(traces=settings.otel_traces, metrics=settings.otel_metrics)


def _lifespan(services: Services, tracing: Tracing | None = None):
    @contextlib.asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        settings = services.settings
        transport = None
        if tracing is not None:  # every upstream request timed for its CLIENT span
            transport = tracing.transport(shared_transport(settings))
        services.pool = UpstreamPool(settings, services.registry, transport=transport)
        services.pool.start()
        await services.limiter.start()
        services.registry.start()
        await services.keys.start()
        services.streams.start()
        log.info(
            "gateway ready: upstream %s, limiter %s, %d keys",
            ", ".join(f"{m.name} {m.spec.base_url}" for m in services.pool.members.values()),
            services.limiter.ready()[1],
            len(services.registry.current),
        )
        try:
            yield
        finally:
            await services.streams.aclose()
            await services.registry.aclose()
            await services.keys.aclose()
            await services.limiter.aclose()
            await services.ledger.aclose()
            await services.pool.aclose()
            if tracing is not None:
                tracing.shutdown()

    return lifespan


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = error_body(
        f"Unknown path {scope['path']!r}. The API lives under /api/v1 "
        "(chat/completions, responses, images/generations, vision/analyze, models).",
        type="invalid_request_error",
        code="not_found",
    )
    await send_json(send, 404, body)
