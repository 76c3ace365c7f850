"""GET /admin/v1/usage: the usage ledger summed for operators, as JSON or CSV, streamed.

The ledger is read a day at a time and the answer is sent as it is made, so a year's export
holds one day's rows, not all of them (`service.usage.report.stream_lines`).

`?from=YYYY-MM-DD&to=YYYY-MM-DD[&tenant=T][&key=K][&group_by=day,tenant,key,model]
[&format=json|csv]`; parameters are checked by `UsageQuery.parse` (400 naming the bad one).
Behind the admin-key check, outside every tenant budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from service.deps import Services
from service.http.context import RequestContext
from service.http.errors import bad_request, limiter_unavailable
from service.usage.ledger import LedgerRow, LedgerUnavailable
from service.usage.report import QueryError, UsageQuery, render_chunks, stream_lines

log = logging.getLogger("service")


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
        days = self.services.ledger.days(query.first, query.last, query.tenant, query.key)
        try:
            # The first day's read finds every row's name: an unreachable Redis is a 503
            # here, before the answer starts.
            first_day = await anext(days, None)
        except LedgerUnavailable:
            ctx.reason = "rate_limiter_unavailable"
            await limiter_unavailable(
                "The ledger's store (Redis) is unreachable, so the ledger cannot be read."
            ).send(send)
            return
        headers = [(b"content-type", b"application/json")]
        if query.format == "csv":
            filename = f"usage-{query.first}-{query.last}.csv"
            headers = [
                (b"content-type", b"text/csv; charset=utf-8"),
                (b"content-disposition", f'attachment; filename="{filename}"'.encode()),
            ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        lines = stream_lines(_following(first_day, days), query.group_by)
        try:
            async for chunk in render_chunks(lines, query, chunk_bytes=16384):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # A send into a transport with room returns without yielding: give other
                # requests their turn between chunks, or a long export runs unbroken.
                await asyncio.sleep(0)
        except LedgerUnavailable as exc:
            # Too late for a status: the answer is left unfinished (the connection closes
            # without the body's end), so no client takes a cut report for a whole one.
            log.warning(
                "usage export %s cut short: the ledger became unreachable (%s)", ctx.request_id, exc
            )
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _following(
    first: list[LedgerRow] | None, rest: AsyncIterator[list[LedgerRow]]
) -> AsyncIterator[list[LedgerRow]]:
    if first is not None:
        yield first
    async for day in rest:
        yield day


def query_params(query_string: bytes) -> dict[str, str]:
    """The query's parameters; one value each (a repeated parameter is a QueryError)."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in params:
            raise QueryError(name, f"Parameter '{name}' is given more than once.")
        params[name] = value
    return params
