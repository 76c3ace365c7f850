"""Read the JSON body under a size cap and a time limit, parse it strictly, validate it.

Runs after auth and before the limiter, so malformed, oversized or stalled requests spend
nothing. Whatever the bytes, the answer is a 4xx naming the problem (or a 503 asking to
retry), never an error of the gateway's own:

- a key that already has its concurrency cap of requests on this process: 429
  `concurrency_limit_exceeded` before its body is read;
- bodies in flight in this process past GATEWAY_MAX_INFLIGHT_BODY_BYTES: 503 `server_busy`
  (`server/inflight.py`), as the bytes arrive; what a request holds is given back when it ends;
- more than `max_bytes` (declared or sent): 413 `request_too_large`, before it is read whole;
- no part of the body for `timeout` seconds (a Content-Length that promises more than is
  sent): 408 `request_timeout`, and the connection closes;
- more than MAX_VALUES JSON keys and values (before parsing them): 413 `request_too_large`;
- not UTF-8, not JSON, `NaN`/`Infinity`, numbers that overflow to infinity, nesting deeper
  than MAX_DEPTH, not an object: 400 `invalid_request_error`;
- then the route's validator (wrong types, missing fields) and the model-name check: 400;
  and the key's model allow-list: 403 `model_not_allowed`.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, NoReturn

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.asgi import header
from service.http.context import RequestContext
from service.http.errors import ApiError, bad_request
from service.http.json_codec import loads_exact
from service.http.validation import Validator, check_model
from service.server.inflight import InFlight

MAX_DEPTH = 64  # levels of objects and arrays, the body's own object included
# Keys and values: parsed, each costs tens of bytes however few it takes in the body (`{},` is
# 3), so the count, not the size, bounds a parse's memory. Real requests hold a few thousand;
# 100,000 levels of nesting (refused later, 400) still fit.
MAX_VALUES = 250_000
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b",:[{")


class BodyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        validate: Validator,
        inflight: InFlight,
        max_bytes: int,
        timeout: float = 15.0,
    ) -> None:
        self.app = app
        self.validate = validate
        self.inflight = inflight
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope["gateway"]
        key, by_key = ctx.key, self.inflight.by_key
        cap = key.policy.concurrent
        if cap is not None and by_key.get(key.id, 0) >= cap:
            ctx.reason = "concurrency_limit_exceeded"
            await _at_cap(key.id).send(send)
            return
        by_key[key.id] = by_key.get(key.id, 0) + 1
        try:
            await self._serve(ctx, scope, receive, send)
        finally:
            left = by_key[key.id] - 1
            if left:
                by_key[key.id] = left
            else:
                del by_key[key.id]

    async def _serve(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await self._read(ctx, scope, receive)
            if raw is None:
                return  # the client went away before sending its body
            ctx.body_size = len(raw)
            payload = self.validate(parse_json_object(raw))
            check_model(payload)
            ctx.model = payload.get("model")
            ctx.stream = payload.get("stream") is True
            ctx.payload = payload
            allowed = ctx.key.models
            if allowed is not None and ctx.model not in allowed:
                raise ApiError(
                    403,
                    f"Key '{ctx.key.id}' may not use model '{ctx.model}'. "
                    f"Allowed: {', '.join(sorted(allowed))}.",
                    code="model_not_allowed",
                    type="permission_error",
                    param="model",
                )
        except ApiError as error:
            ctx.reason = error.code
            await error.send(send)
            return
        await self.app(scope, receive, send)

    async def _read(self, ctx: RequestContext, scope: Scope, receive: Receive) -> bytes | None:
        declared = header(scope, b"content-length")
        held = 0  # bytes of this body held in the process's bodies in flight
        if declared is not None:
            try:
                declared_size = int(declared)
                if declared_size < 0:
                    raise ValueError(declared)
            except ValueError:
                raise bad_request("Content-Length is not a number.") from None
            if declared_size > self.max_bytes:
                raise self._too_large()
            # Held as declared before a byte is read: a body refused for room costs no read.
            ctx.held_bytes += self.inflight.take(declared_size, ctx.body_owner())
            held = declared_size
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    408,
                    f"The request body stopped arriving: nothing for {self.timeout:g}s "
                    f"after {size} bytes. Does Content-Length match the body?",
                    code="request_timeout",
                    headers=[(b"connection", b"close")],
                ) from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large()
            if size > held:  # no Content-Length (chunked): held as it arrives
                ctx.held_bytes += self.inflight.take(size - held, ctx.body_owner())
                held = size
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"Request body is larger than the limit of {self.max_bytes} bytes.",
            code="request_too_large",
        )


def _at_cap(key_id: str) -> ApiError:
    return ApiError(
        429,
        f"Too many requests in flight for key '{key_id}' (concurrent requests cap). "
        "Retry after 1s.",
        code="concurrency_limit_exceeded",
        type="rate_limit_error",
        headers=[(b"retry-after", b"1")],
    )


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, stricter than `json.loads`: UTF-8 only, finite numbers only,
    at most MAX_DEPTH levels deep and MAX_VALUES keys and values. Raises ApiError (400, or 413
    for too many values) naming what is wrong."""
    if not raw:
        raise bad_request("The request body is empty; send a JSON object.")
    if _more_values_than(raw, MAX_VALUES):
        raise ApiError(
            413,
            f"The JSON body holds more than {MAX_VALUES} keys and values.",
            code="request_too_large",
        )
    try:
        # Strict as the parser below (UTF-8, finite numbers, no NaN): what it refuses, or might
        # read inexactly, the parser below reads, and words the refusal.
        payload = loads_exact(raw)
    except ValueError:
        payload = _parse_exactly(raw)
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    # Nesting is no deeper than the count of opening brackets (strings' included): only a body
    # with that many is walked.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        _check_tree(payload)
    return payload


def _parse_exactly(raw: bytes) -> Any:
    """The standard library's reading of the body, or the 400 that says what is wrong."""
    try:
        text = raw.decode("utf-8")  # json.loads(bytes) would also take UTF-16/32 and surrogates
    except UnicodeDecodeError as exc:
        raise bad_request(f"The request body is not valid UTF-8 (byte {exc.start}).") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise _too_deep() from None
    except _NonFinite:
        raise _non_finite(text) from None
    except ValueError as exc:
        raise bad_request(
            f"We could not parse the JSON body of your request: {exc}. "
            "Send a valid JSON object with Content-Type: application/json."
        ) from None


def _non_finite_literal(literal: str) -> NoReturn:
    raise bad_request(f"The JSON body contains {literal}, which is not a JSON number.")


class _NonFinite(Exception):
    """A number literal that overflows to infinity (`1e999`)."""


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _NonFinite(literal)
    return value


def _non_finite(text: str) -> ApiError:
    """The 400 for a body with a number that overflows: where it is, if the tree tells."""
    try:
        payload = _PERMISSIVE.decode(text)
        if isinstance(payload, dict):
            _check_tree(payload)
    except ApiError as error:
        return error
    except (ValueError, RecursionError):
        pass
    return bad_request("The JSON body contains a number too large to be finite.")


_DECODER = json.JSONDecoder(parse_constant=_non_finite_literal, parse_float=_finite_float)
_PERMISSIVE = json.JSONDecoder(parse_constant=_non_finite_literal)


def _more_values_than(raw: bytes, limit: int) -> bool:
    """Whether a JSON text holds more than `limit` keys and values, without parsing it.

    Each key or value but the first follows one of `[ { , :` outside strings. Their count in
    the whole text bounds that from above, in one fast pass; only when that is not enough are
    strings told apart: with escaped backslashes and quotes removed, quotes delimit strings.
    """
    if len(raw) <= limit or len(raw.translate(None, _NOT_STRUCTURAL)) <= limit:
        return False
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    if raw.count(b'"') // 2 > limit:  # each string is a key or a value
        return True
    outside = b"".join(raw.split(b'"')[::2])
    return len(outside.translate(None, _NOT_STRUCTURAL)) > limit


def _check_tree(payload: dict[str, Any]) -> None:
    """Refuse nesting deeper than MAX_DEPTH and non-finite numbers (`1e999` parses as inf),
    walking without recursion, so the routes can re-encode the body safely."""
    # (container, its depth, its path, the top-level field it is under)
    stack: list[tuple[dict[str, Any] | list[Any], int, str, str | None]] = [(payload, 1, "", None)]
    while stack:
        node, depth, path, field = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, dict | list):
                child_path = _child_path(path, key)
                under = key if field is None else field
                if depth == MAX_DEPTH:
                    raise _too_deep(child_path, under)
                stack.append((child, depth + 1, child_path, under))
            elif isinstance(child, float) and not math.isfinite(child):
                under = key if field is None else field
                raise bad_request(
                    f"{_shown(_child_path(path, key))} is a number too large to be finite.",
                    _shown(under, quote=False),
                )


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _shown(path: str, quote: bool = True, limit: int = 200) -> str:
    shown = path if len(path) <= limit else path[:limit] + "..."
    return f"'{shown}'" if quote else shown


def _too_deep(path: str | None = None, field: str | None = None) -> ApiError:
    where = f" (at {_shown(path)})" if path else ""
    return bad_request(
        f"The JSON body is nested deeper than {MAX_DEPTH} levels{where}.",
        None if field is None else _shown(field, quote=False),
    )
