"""What every `/admin/v1` route shares: method dispatch, the read-only check, JSON bodies,
answers, store failures and the audit record of each write.

A route class names its handlers by method (`get`, `post`, `patch`, `put`, `delete`); each
returns `(status, object)` or raises ApiError. Writes are refused to read-only admin keys
before their body is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from service.deps import Services
from service.http.asgi import send_json
from service.http.context import RequestContext
from service.http.errors import ApiError, bad_request
from service.registry.follow import StoreFollower
from service.registry.keys import rfc3339
from service.registry.records import InvalidInput
from service.registry.store import StoreUnavailable, Write, WriteRefused

MAX_ADMIN_BODY = 64 * 1024
BODY_TIMEOUT = 15.0
_WRITES = {"POST", "PATCH", "PUT", "DELETE"}
_AUDIT = logging.getLogger("service.admin")

Answer = tuple[int, dict[str, Any]]


class AdminRoute:
    """Dispatches to the handler named for the method; turns failures into answers."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def keys(self) -> StoreFollower:
        return self.services.keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        method = scope["method"]
        try:
            if method in _WRITES and ctx.admin is not None and ctx.admin.read_only:
                raise ApiError(
                    403,
                    f"Admin key '{ctx.admin.id}' is read-only: it may read (GET), not change.",
                    code="permission_denied",
                    type="permission_error",
                )
            handler = getattr(self, method.lower())
            status, answer = await handler(ctx, scope, receive)
        except InvalidInput as exc:
            ctx.reason = "invalid_request_error"
            await bad_request(str(exc), param=exc.param).send(send)
            return
        except StoreUnavailable:
            ctx.reason = "store_unavailable"
            await store_unavailable().send(send)
            return
        except ApiError as error:
            ctx.reason = error.code
            await error.send(send)
            return
        await send_json(send, status, json.dumps(answer).encode())

    # --- for handlers ----------------------------------------------------------------------

    async def write(self, ctx: RequestContext, change: Write, action: str) -> int:
        """Write `change` through the store, then log and keep its audit record."""
        assert ctx.admin is not None
        record = {
            "time": rfc3339(time.time()),
            "action": action,
            "admin_key_id": ctx.admin.id,
            "target": change.id,
            "request_id": ctx.request_id,
        }
        version = await self.keys.write(change, record)
        if _AUDIT.isEnabledFor(logging.INFO):
            _AUDIT.info(json.dumps({"event": "admin", **record}, separators=(",", ":")))
        return version


async def read_body(scope: Scope, receive: Receive) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body), under a size and time cap."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                message = await receive()
        except TimeoutError:
            raise ApiError(
                408, "The request body stopped arriving.", code="request_timeout"
            ) from None
        if message["type"] == "http.disconnect":
            raise ApiError(400, "The client went away.", code="invalid_request_error")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_ADMIN_BODY:
            raise ApiError(
                413,
                f"Request body is larger than the admin API's limit of {MAX_ADMIN_BODY} bytes.",
                code="request_too_large",
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    return _json_object(raw)


def _reject_constant(literal: str) -> None:
    raise ValueError(f"{literal} is not a JSON number")


# The admin API's bodies are small (MAX_ADMIN_BODY) and every field's type is checked after
# parsing (a float, finite or not, is no valid value anywhere), so the standard parser does.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise bad_request(f"The request body is not valid UTF-8 (byte {exc.start}).") from None
    except RecursionError:
        raise bad_request("The JSON body is nested too deeply.") from None
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def query(scope: Scope, allowed: set[str]) -> dict[str, str]:
    """The query's parameters (one value each, only `allowed` ones), else a 400."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), True):
        if name not in allowed:
            raise bad_request(f"Unknown parameter '{name}'.", param=name)
        if name in params:
            raise bad_request(f"Parameter '{name}' is given more than once.", param=name)
        params[name] = value
    return params


def path_id(scope: Scope, name: str) -> str:
    return scope["path_params"][name]


def not_found(kind: str, item_id: str) -> ApiError:
    return ApiError(404, f"No {kind} with id '{item_id}'.", code="not_found")


def store_unavailable() -> ApiError:
    return ApiError(
        503,
        "The key store (Redis) is unreachable: the change was not made. Keys already known "
        "keep working; retry the change later.",
        code="store_unavailable",
        type="server_error",
        headers=[(b"retry-after", b"1")],
    )


def refused(error: WriteRefused, kind: str, item_id: str) -> ApiError:
    if error.reason == "exists":
        return ApiError(
            409,
            f"A {kind} with id '{item_id}' exists already; nothing was changed.",
            code=f"{kind}_exists",
        )
    if error.reason == "changed":
        return ApiError(409, f"The {kind} '{item_id}' changed meanwhile; retry.", code="conflict")
    return not_found(kind, item_id)
