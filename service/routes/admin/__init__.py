"""`/admin/v1`: the operators' API (admin keys only): usage, keys, tenants, audit."""

from service.routes.admin.audit import Audit
from service.routes.admin.keys import Key, Keys, RotateKey
from service.routes.admin.tenants import Tenant, Tenants
from service.routes.admin.usage import AdminUsage

__all__ = ["AdminUsage", "Audit", "Key", "Keys", "RotateKey", "Tenant", "Tenants"]
