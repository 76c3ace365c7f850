"""GET /admin/v1/status: what an operator's console shows besides the ledger, read-only.

This replica's readiness (the `/readyz` body: limiter, upstream status, streams in flight on
it) and the budgets in force for every key and tenant, with the key file's `[defaults]`
applied: each window's limit, length and text, each spend limit's USD and period. Behind the
admin-key check; spends nothing, reads no Redis.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from service.deps import Services
from service.http.asgi import send_json
from service.limiter.policy import LimitPolicy, SpendLimit, Window
from service.routes.health import Readyz
from service.usage.record import TICKS_PER_USD
from service.usage.report import json_bytes


class AdminStatus:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        replica = await _readiness(self.services)
        # One entry a key (a rotated key's two secrets are one key), sorted by id.
        entries = self.services.registry.current.entries()
        keys = sorted({key.id: key for key in entries}.values(), key=lambda key: key.id)
        tenants: dict[str, dict[str, Any]] = {}
        for key in keys:
            if key.tenant is not None and key.tenant not in tenants:
                tenants[key.tenant] = _tenant_doc(key.tenant, key.policy)
        doc = {
            "object": "status",
            "replica": replica,
            "tenants": [tenants[name] for name in sorted(tenants)],
            "keys": [
                {
                    "id": key.id,
                    "tenant": key.tenant,
                    **_budgets(key.policy.requests, key.policy.tokens, key.policy.spend),
                    "concurrent": key.policy.concurrent,
                    "models": sorted(key.models) if key.models is not None else None,
                }
                for key in keys
            ],
        }
        await send_json(send, 200, json_bytes(doc))


async def _readiness(services: Services) -> dict[str, Any]:
    """The `/readyz` body of this replica, as `/readyz` makes it (whatever it comes to hold)."""
    sent: list[bytes] = []

    async def keep(message: Message) -> None:
        sent.append(message.get("body", b""))

    await Readyz(services)({"type": "http", "method": "GET"}, _no_body, keep)
    return json.loads(b"".join(sent))


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _tenant_doc(tenant: str, policy: LimitPolicy) -> dict[str, Any]:
    return {
        "id": tenant,
        **_budgets(policy.tenant_requests, policy.tenant_tokens, policy.tenant_spend),
    }


def _budgets(
    requests: tuple[Window, ...], tokens: tuple[Window, ...], spend: tuple[SpendLimit, ...]
) -> dict[str, Any]:
    """Each budget as its windows: `{"limit", "seconds", "text"}` (spend: `{"usd", "period",
    "text"}`), an empty list where none is set."""
    return {
        "requests": [_window(w) for w in requests],
        "tokens": [_window(w) for w in tokens],
        "spend": [
            {"usd": limit.ticks / TICKS_PER_USD, "period": limit.period, "text": limit.text}
            for limit in spend
        ],
    }


def _window(window: Window) -> dict[str, Any]:
    return {"limit": window.limit, "seconds": window.seconds, "text": window.text}
