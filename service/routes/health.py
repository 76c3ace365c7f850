"""GET /healthz, /readyz and /metrics: no key needed."""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from service.deps import Services
from service.http.asgi import send_json
from service.observability.metrics import render


class Healthz:
    """Liveness: the process serves."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, b'{"status":"ok"}')


class Readyz:
    """Readiness: 503 while draining, or when the limiter cannot serve (closed mode, Redis down).

    The body also says what each upstream's key-status endpoint last answered, or that it is
    out of credits (`upstreams`, and `upstream` in one line); that never fails readiness:
    every replica would leave the Service at once.
    """

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.services
        if services.lifecycle.draining:
            status, doc = 503, {"status": "draining"}
        else:
            ok, limiter = services.limiter.ready()
            upstreams = services.pool.states() if services.pool is not None else {}
            status = 200 if ok else 503
            doc = {
                "status": "ready" if ok else "unavailable",
                "limiter": limiter,
                "upstream": _summary(upstreams),
                "upstreams": upstreams,
                "keys": len(services.registry.current),
                "keys_file": services.registry.reload_problem or "ok",
                "active_streams": len(services.streams),
            }
        await send_json(send, status, json.dumps(doc).encode())


def _summary(states: dict[str, str]) -> str:
    """One upstream: its state. Several: `ok` when all are, else the first that is not."""
    if not states:
        return "checking"
    if len(states) == 1:
        return next(iter(states.values()))
    for name, state in states.items():
        if state != "ok":
            return f"{name}: {state}"
    return "ok"


class Metrics:
    """Prometheus exposition of this process (or of all workers, in multiprocess mode)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, content_type = render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
