"""GET /admin/v1/usage: the usage ledger summed for operators, as JSON or CSV.

`?from=YYYY-MM-DD&to=YYYY-MM-DD[&tenant=T][&key=K][&group_by=day,tenant,key,model]
[&format=json|csv]`; parameters are checked by `UsageQuery.parse` (400 naming the bad one).
Behind the admin-key check, outside every tenant budget.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from service.deps import Services
from service.http.asgi import send_json
from service.http.context import RequestContext
from service.http.errors import bad_request, limiter_unavailable
from service.usage.ledger import LedgerUnavailable
from service.usage.report import QueryError, UsageQuery, render, summarize


class AdminUsage:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        try:
            query = UsageQuery.parse(query_params(scope.get("query_string", b"")))
        except QueryError as exc:
            ctx.reason = "invalid_request_error"
            await bad_request(str(exc), param=exc.param).send(send)
            return
        try:
            rows = await self.services.ledger.rows(
                query.first, query.last, tenant=query.tenant, key=query.key
            )
        except LedgerUnavailable:
            ctx.reason = "rate_limiter_unavailable"
            await limiter_unavailable(
                "The limiter's store (Redis) is unreachable, so the ledger cannot be read."
            ).send(send)
            return
        body = render(summarize(rows, query.group_by), query)
        if query.format == "csv":
            filename = f"usage-{query.first}-{query.last}.csv"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/csv; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"content-disposition", f'attachment; filename="{filename}"'.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await send_json(send, 200, body)


def query_params(query_string: bytes) -> dict[str, str]:
    """The query's parameters; one value each (a repeated parameter is a QueryError)."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in params:
            raise QueryError(name, f"Parameter '{name}' is given more than once.")
        params[name] = value
    return params
