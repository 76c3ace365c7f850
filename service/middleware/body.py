"""Read the JSON body under a size cap, validate it for the route, check the model allow-list.

Runs after auth and before the limiter, so malformed or oversized requests spend nothing.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from service.asgi import header
from service.errors import ApiError, bad_request
from service.validation import Validator


class BodyMiddleware:
    def __init__(self, app: ASGIApp, validate: Validator, max_bytes: int) -> None:
        self.app = app
        self.validate = validate
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope["gateway"]
        try:
            raw = await self._read(scope, receive)
            if raw is None:
                return  # the client went away before sending its body
            ctx.body_size = len(raw)
            payload = self._parse(raw)
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

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        declared = header(scope, b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                raise bad_request("Content-Length is not a number.") from None
            if too_big:
                raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"Request body is larger than the limit of {self.max_bytes} bytes.",
            code="request_too_large",
        )

    def _parse(self, raw: bytes) -> dict:
        if not raw:
            raise bad_request("The request body is empty; send a JSON object.")
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(
                f"We could not parse the JSON body of your request: {exc}. "
                "Send a valid JSON object with Content-Type: application/json."
            ) from None
        if not isinstance(payload, dict):
            raise bad_request("The request body must be a JSON object.")
        return self.validate(payload)
