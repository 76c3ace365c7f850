"""`/admin/v1/tenants`: tenants' shared budgets, set through the API beside the file's.

A tenant the key file defines is read-only here (409 on writes); an API tenant's budgets
apply to all of its keys, the file's included, as a file tenant's do.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope

from service.http.context import RequestContext
from service.http.errors import ApiError
from service.registry.records import check_id, parse_tenant, tenant_object
from service.registry.store import Write, WriteRefused
from service.routes.admin.common import (
    AdminRoute,
    Answer,
    not_found,
    path_id,
    query,
    read_body,
    refused,
)


class Tenants(AdminRoute):
    """GET /admin/v1/tenants: the file's tenants and the API's, sorted by id."""

    async def get(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        query(scope, set())
        view = self.keys.holder.view
        objects = {
            tenant: tenant_object(tenant, "file", raw)
            for tenant, raw in view.file.declared.raw_tenants.items()
        }
        for tenant, record in view.tenants.items():
            objects.setdefault(tenant, _api_object(record))
        return 200, {"object": "list", "data": [objects[t] for t in sorted(objects)]}


class Tenant(AdminRoute):
    """GET, PUT and DELETE on /admin/v1/tenants/{tenant}."""

    async def get(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        tenant = path_id(scope, "tenant")
        view = self.keys.holder.view
        raw = view.file.declared.raw_tenants.get(tenant)
        if raw is not None:
            return 200, tenant_object(tenant, "file", raw)
        record = view.tenants.get(tenant)
        if record is None:
            raise not_found("tenant", tenant)
        return 200, _api_object(record)

    async def put(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        body = await read_body(scope, receive)
        tenant = self._api_tenant(scope)
        record = parse_tenant(check_id(tenant, "tenant"), body)
        await self.write(ctx, Write("tenant", tenant, "put", record.dumps()), "tenant.put")
        return 200, _api_object(record)

    async def delete(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        await read_body(scope, receive)
        tenant = self._api_tenant(scope)
        try:
            await self.write(ctx, Write("tenant", tenant, "delete"), "tenant.delete")
        except WriteRefused as exc:
            raise refused(exc, "tenant", tenant) from None
        return 200, {"object": "tenant", "id": tenant, "deleted": True}

    def _api_tenant(self, scope: Scope) -> str:
        tenant = path_id(scope, "tenant")
        if tenant in self.keys.holder.view.file.declared.raw_tenants:
            raise ApiError(
                409,
                f"Tenant '{tenant}' is defined in the key file; change the file instead.",
                code="tenant_managed_by_file",
            )
        return tenant


def _api_object(record: Any) -> dict[str, Any]:
    return tenant_object(
        record.id,
        "api",
        {"requests": record.requests, "tokens": record.tokens, "spend": record.spend},
    )
