"""GET /admin/v1/audit?limit=N: who changed which key or tenant, newest first.

Read from the store (Redis, or this process's memory without it): 503 `store_unavailable`
while Redis is unreachable. The records hold ids only, never a secret or a digest.
"""

from __future__ import annotations

from starlette.types import Receive, Scope

from service.http.context import RequestContext
from service.http.errors import bad_request
from service.registry.store import AUDIT_KEPT
from service.routes.admin.common import AdminRoute, Answer, query

DEFAULT_LIMIT = 100
_FIELDS = ("time", "action", "admin_key_id", "target", "request_id")


class Audit(AdminRoute):
    async def get(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        text = query(scope, {"limit"}).get("limit", str(DEFAULT_LIMIT))
        wellformed = text.isascii() and text.isdigit() and len(text) <= 6
        if not wellformed or not 1 <= int(text) <= AUDIT_KEPT:
            raise bad_request(f"'limit' must be an integer from 1 to {AUDIT_KEPT}.", "limit")
        records = await self.keys.store.audit(int(text))
        data = [{name: record.get(name) for name in _FIELDS} for record in records]
        return 200, {"object": "list", "data": data}
