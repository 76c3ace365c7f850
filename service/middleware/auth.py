"""Authenticate the tenant key: `Authorization: Bearer <key>` against the registry in force."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.asgi import header
from service.errors import invalid_api_key
from service.registry.reload import RegistryHolder


class AuthMiddleware:
    def __init__(self, app: ASGIApp, registry: RegistryHolder) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope["gateway"]
        raw = header(scope, b"authorization")
        if raw is None:
            error = invalid_api_key("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        else:
            scheme, _, token = raw.strip().partition(b" ")
            token = token.strip()
            if scheme.lower() != b"bearer" or not token:
                error = invalid_api_key("Malformed Authorization header. Expected 'Bearer <key>'.")
            else:
                registry = self.registry.current
                key = registry.lookup(token.decode("latin-1"))
                if key is not None:
                    ctx.key = key
                    ctx.catalog = registry.models
                    await self.app(scope, receive, send)
                    return
                # Never echo the presented key, not even a prefix.
                error = invalid_api_key("Incorrect API key provided.")
        ctx.reason = "invalid_api_key"
        await error.send(send)
