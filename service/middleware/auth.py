"""Authenticate the caller: `Authorization: Bearer <key>` against the registry in force.

Tenant keys open `/api/v1`, admin keys (`[[admin_keys]]`) open `/admin/v1`, and neither
opens the other: each side answers 401 for the other's keys. A disabled or expired API key
gets a 401 that says which.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.asgi import header
from service.http.errors import invalid_api_key
from service.registry.reload import RegistryHolder


class AuthMiddleware:
    """Sets `ctx.key` (tenant key) or, with `admin=True`, `ctx.admin` (admin key)."""

    def __init__(self, app: ASGIApp, registry: RegistryHolder, *, admin: bool = False) -> None:
        self.app = app
        self.registry = registry
        self.admin = admin

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
                secret = token.decode("latin-1")
                if self.admin:
                    admin = registry.lookup_admin(secret)
                    if admin is not None:
                        ctx.admin = admin
                        await self.app(scope, receive, send)
                        return
                    wrong_side = registry.lookup(secret) is not None
                    hint = " A tenant key does not open /admin/v1; use an admin key."
                else:
                    key = registry.lookup(secret)
                    # An API key may be disabled, expired or a rotated-out secret: checked
                    # against the clock now (the auth is at the request's start only, so a
                    # running stream finishes).
                    refusal = key.refusal(time.time()) if key is not None and key.gated else None
                    if refusal is not None:
                        ctx.key = key  # the access log names the key still in use
                        ctx.reason = "invalid_api_key"
                        await invalid_api_key(refusal).send(send)
                        return
                    if key is not None:
                        ctx.key = key
                        ctx.catalog = registry.models
                        ctx.prices = registry.prices
                        await self.app(scope, receive, send)
                        return
                    wrong_side = registry.lookup_admin(secret) is not None
                    hint = " An admin key opens /admin/v1 only; use a tenant key here."
                # Never echo the presented key, not even a prefix. The hint only goes to a
                # caller who holds a valid key of the other kind.
                message = "Incorrect API key provided." + (hint if wrong_side else "")
                error = invalid_api_key(message)
        ctx.reason = "invalid_api_key"
        await error.send(send)
