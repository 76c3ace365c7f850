"""`/admin/v1/keys`: issue, list, read, change, rotate and delete tenant keys (SPEC 10).

Reads answer from this replica's registry (no Redis round trip, and they answer while Redis
is down); writes go through the store and are in force here at once, on every replica within
a second. A secret is made here, answered once, and only its digest is stored.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.types import Receive, Scope

from service.http.context import RequestContext
from service.http.errors import ApiError
from service.registry.keys import hash_key, new_key_secret, rfc3339
from service.registry.records import (
    KeyRecord,
    apply_update,
    check_id,
    key_object,
    parse_create,
    parse_rotate,
    parse_update,
    rotate,
)
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

_ATTEMPTS = 5  # read-change-write rounds before a PATCH or rotation answers 409 `conflict`


class Keys(AdminRoute):
    """GET (list) and POST (create) on /admin/v1/keys."""

    async def get(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        tenant = query(scope, {"tenant"}).get("tenant")
        objects = all_keys(self)
        if tenant is not None:
            objects = [o for o in objects if o["tenant"] == tenant]
        return 200, {"object": "list", "data": objects}

    async def post(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        new = parse_create(await read_body(scope, receive))
        key_id = new.id or f"key-{secrets.token_hex(8)}"
        if key_id in self.keys.holder.view.file_ids():
            raise _exists(key_id)
        secret = new_key_secret()
        record = new.record(key_id, hash_key(secret), time.time())
        try:
            await self.write(ctx, Write("key", key_id, "create", record.dumps()), "key.create")
        except WriteRefused as exc:
            raise refused(exc, "key", key_id) from None
        return 201, {**key_object(record), "secret": secret}


class Key(AdminRoute):
    """GET, PATCH and DELETE on /admin/v1/keys/{key_id}."""

    async def get(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        key_id = path_id(scope, "key_id")
        found = find_key(self, key_id)
        if found is None:
            raise not_found("key", key_id)
        return 200, found

    async def patch(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        changes = parse_update(await read_body(scope, receive))
        key_id = _api_key_id(self, scope)
        record = await _change(self, ctx, key_id, "key.update", lambda r: apply_update(r, changes))
        return 200, key_object(record)

    async def delete(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        await read_body(scope, receive)
        key_id = _api_key_id(self, scope)
        try:
            await self.write(ctx, Write("key", key_id, "delete"), "key.delete")
        except WriteRefused as exc:
            raise refused(exc, "key", key_id) from None
        return 200, {"object": "key", "id": key_id, "deleted": True}


class RotateKey(AdminRoute):
    """POST /admin/v1/keys/{key_id}/rotate: a new secret; the old one works for the grace."""

    async def post(self, ctx: RequestContext, scope: Scope, receive: Receive) -> Answer:
        grace = parse_rotate(await read_body(scope, receive))
        key_id = _api_key_id(self, scope)
        secret = new_key_secret()
        digest = hash_key(secret)
        record = await _change(
            self, ctx, key_id, "key.rotate", lambda r: rotate(r, digest, grace, time.time())
        )
        expires = record.previous_expires_at
        return 200, {
            **key_object(record),
            "secret": secret,
            "previous_secret_expires_at": rfc3339(expires) if expires is not None else None,
        }


async def _change(route: AdminRoute, ctx: RequestContext, key_id: str, action: str, change):
    """Read the stored record, change it, write it if nobody changed it meanwhile."""
    store = route.keys.store
    for _ in range(_ATTEMPTS):
        stored = await store.read("key", key_id)
        if stored is None:
            raise not_found("key", key_id)
        record: KeyRecord = change(KeyRecord.loads(stored))
        try:
            await route.write(ctx, Write("key", key_id, "replace", record.dumps(), stored), action)
        except WriteRefused as exc:
            if exc.reason == "changed":
                continue
            raise refused(exc, "key", key_id) from None
        return record
    raise refused(WriteRefused("changed"), "key", key_id)


def _api_key_id(route: AdminRoute, scope: Scope) -> str:
    """The path's key id, if the API may change it (a file key: 409)."""
    key_id = path_id(scope, "key_id")
    if key_id in route.keys.holder.view.file_ids():
        raise ApiError(
            409,
            f"Key '{key_id}' is defined in the key file; change the file instead.",
            code="key_managed_by_file",
        )
    try:
        return check_id(key_id)
    except ValueError:
        raise not_found("key", key_id) from None


def _exists(key_id: str) -> ApiError:
    return ApiError(
        409,
        f"A key with id '{key_id}' exists already; nothing was changed. "
        "Rotate it for a new secret.",
        code="key_exists",
    )


def find_key(route: AdminRoute, key_id: str) -> dict[str, Any] | None:
    view = route.keys.holder.view
    entry = view.file.declared.raw_keys.get(key_id)
    if entry is not None:
        return key_object(file_id=key_id, file_entry=entry)
    if key_id in {admin.id for admin in view.file.admin_keys}:
        return None  # an admin key is no tenant key
    record = view.keys.get(key_id)
    return key_object(record) if record is not None else None


def all_keys(route: AdminRoute) -> list[dict[str, Any]]:
    view = route.keys.holder.view
    taken = view.file_ids()
    objects = {
        key_id: key_object(file_id=key_id, file_entry=entry)
        for key_id, entry in view.file.declared.raw_keys.items()
    }
    for key_id, record in view.keys.items():
        if key_id not in taken:
            objects[key_id] = key_object(record)
    return [objects[key_id] for key_id in sorted(objects)]
