"""Rewrite every upstream failure into the OpenAI error shape, keeping the upstream's message.

The xAI API answers errors as `{"code": "...", "error": "message"}`, and a wrong API key can
come back as 400. Tenants never see the gateway's own credential problems in detail: those
become 502 `upstream_auth_failed` and the upstream's text goes to the log only.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from service.http.errors import ApiError
from service.observability.metrics import UPSTREAM_ERRORS

log = logging.getLogger("service.upstream")

_CLIENT_CODES = {
    400: "invalid_request_error",
    404: "model_not_found",
    409: "conflict",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
}


def upstream_message(body: bytes) -> str:
    """The human message inside an upstream error body, whatever its shape."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or "no message"
    if isinstance(doc, dict):
        error = doc.get("error")
        if isinstance(error, dict):  # OpenAI shape
            return str(error.get("message") or error)
        if isinstance(error, str):  # xAI shape
            return error
        for name in ("message", "detail", "code"):
            if isinstance(doc.get(name), str):
                return doc[name]
    return str(doc)[:500]


class UpstreamError(ApiError):
    """An ApiError from the upstream side, with the `kind` of failure: the pool steps around
    `unreachable`, `server_error` and `rate_limited` before the first byte, and takes an
    upstream `out_of_credits` out of rotation."""

    def __init__(self, kind: str, status: int, message: str, **fields: Any) -> None:
        super().__init__(status, message, **fields)
        self.kind = kind
        self.upstream: str | None = None  # the upstream that answered so (the pool says)


def is_out_of_credits(status: int, message: str) -> bool:
    """Whether an upstream refusal says its team has no credits left or reached its spending
    limit (xAI: "Your team … has either used all available credits or reached its monthly
    spending limit", as a 429 and sometimes a 403), rather than a rate limit ("Too many
    requests for team …"). One answer needs another upstream; the other, a moment."""
    if status not in (402, 403, 429):
        return False
    lowered = message.lower()
    return "credits" in lowered or "spending limit" in lowered


class UpstreamMisconfigured(ApiError):
    """The upstream has no route for an API path: the gateway's XAI_BASE_URL is wrong (most
    often without its `/v1`). The tenant can do nothing about it: 502, not the upstream's 404."""

    def __init__(self) -> None:
        super().__init__(
            502,
            "The gateway is misconfigured: its upstream has no route for this API (does "
            "XAI_BASE_URL end in /v1?). Tell the gateway's operator.",
            code="upstream_error",
            type="server_error",
        )


def _is_no_route(status: int, message: str) -> bool:
    """xAI's (and the simulator's) answer to a path it does not serve."""
    return status == 404 and message.startswith("No route for ")


def _is_credential_error(status: int, message: str) -> bool:
    if status in (401, 403):
        return True
    lowered = message.lower()
    return (
        status == 400 and "api key" in lowered and ("incorrect" in lowered or "invalid" in lowered)
    )


def normalise_upstream_error(status: int, body: bytes, retry_after: str | None = None) -> ApiError:
    """The ApiError a client gets for an upstream error response."""
    message = upstream_message(body)
    if is_out_of_credits(status, message):
        UPSTREAM_ERRORS.labels("out_of_credits").inc()
        return UpstreamError(
            "out_of_credits",
            503,
            f"Upstream quota exhausted: {message}",
            code="upstream_quota_exhausted",
            type="server_error",
            headers=[(b"x-should-retry", b"false")],
        )
    if _is_credential_error(status, message):
        UPSTREAM_ERRORS.labels("auth").inc()
        log.error("upstream rejected the gateway's API key (HTTP %d): %s", status, message)
        return UpstreamError(
            "auth",
            502,
            "The upstream API rejected the gateway's credentials; the operator must fix the "
            "gateway's XAI_API_KEY.",
            code="upstream_auth_failed",
            type="server_error",
        )
    if _is_no_route(status, message):
        UPSTREAM_ERRORS.labels("misconfigured").inc()
        log.error("upstream answered 404 %r: does XAI_BASE_URL end in /v1?", message)
        return UpstreamMisconfigured()
    if status == 429:
        UPSTREAM_ERRORS.labels("rate_limited").inc()
        seconds = _retry_after_seconds(retry_after)
        return UpstreamError(
            "rate_limited",
            429,
            f"Upstream rate limit: {message}",
            code="upstream_rate_limited",
            type="rate_limit_error",
            headers=[(b"retry-after", str(seconds).encode())],
        )
    if 400 <= status < 500:
        UPSTREAM_ERRORS.labels("client_error").inc()
        return UpstreamError(
            "client_error", status, message, code=_CLIENT_CODES.get(status, "upstream_client_error")
        )
    UPSTREAM_ERRORS.labels("server_error").inc()
    return UpstreamError(
        "server_error",
        502,
        f"Upstream error (HTTP {status}): {message}",
        code="upstream_error",
        type="server_error",
    )


def upstream_redirect(status: int, location: str | None) -> ApiError:
    """An upstream 3xx: never followed, so the upstream key never reaches another host."""
    UPSTREAM_ERRORS.labels("redirect").inc()
    log.error("upstream answered HTTP %d (redirect to %r); not followed", status, location)
    return UpstreamError(
        "redirect",
        502,
        f"Upstream error: the upstream answered with a redirect (HTTP {status}), "
        "which the gateway does not follow.",
        code="upstream_error",
        type="server_error",
    )


def upstream_bad_answer(detail: str) -> ApiError:
    """A 2xx the gateway cannot pass on: not the media type asked for, too big, not an object."""
    UPSTREAM_ERRORS.labels("bad_answer").inc()
    log.warning("upstream answer refused: %s", detail)
    return UpstreamError(
        "bad_answer",
        502,
        f"Upstream error: the upstream sent {detail}.",
        code="upstream_error",
        type="server_error",
    )


def upstream_unreachable(detail: str) -> ApiError:
    UPSTREAM_ERRORS.labels("unreachable").inc()
    return UpstreamError(
        "unreachable",
        502,
        f"Upstream unreachable: {detail}",
        code="upstream_error",
        type="server_error",
    )


def upstream_timeout(detail: str) -> ApiError:
    UPSTREAM_ERRORS.labels("timeout").inc()
    return UpstreamError(
        "timeout", 504, f"Upstream timeout: {detail}", code="upstream_timeout", type="server_error"
    )


def _retry_after_seconds(value: str | None) -> int:
    try:
        return max(1, int(float(value))) if value else 1
    except ValueError:
        return 1
