"""OpenAI-shaped errors: one exception type, one body shape, one way to send them."""

from __future__ import annotations

import json

from starlette.types import Send

from service.http.asgi import send_json


class ApiError(Exception):
    """An error answered before a response starts, as `{"error": {...}}` with a real status.

    The OpenAI SDK maps the status to its exception classes (401 AuthenticationError,
    429 RateLimitError, ...) and shows `message`.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)

    async def send(self, send: Send) -> None:
        await send_json(send, self.status, self.body(), self.headers)


def error_body(message: str, *, type: str, code: str, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type, "param": param, "code": code}}
    ).encode()


def sse_error_event(message: str) -> bytes:
    """The seed document's in-stream error event, sent once a stream has started."""
    return b"data: " + json.dumps({"error": f"API error: {message}"}).encode() + b"\n\n"


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code="invalid_request_error", param=param)


def invalid_api_key(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key")


def response_not_found(object_id: str, kind: str = "response") -> ApiError:
    """The one answer for a stored object's id (a response, an item, a conversation) that
    does not exist or is another tenant's.

    Identical in both cases (status, body, headers), so ids cannot be probed.
    """
    return ApiError(404, f"No {kind} found with id '{object_id}'.", code="not_found")


def limiter_unavailable(message: str) -> ApiError:
    """503 `rate_limiter_unavailable`: the limiter's store (Redis) cannot be reached."""
    return ApiError(
        503,
        message,
        code="rate_limiter_unavailable",
        type="server_error",
        headers=[(b"retry-after", b"1")],
    )
