"""One upstream request: first-byte deadline, retries before the first byte, error rewriting.

Connection failures and 502/503/504 answers are retried with jittered exponential backoff
(UPSTREAM_RETRIES times); a 4xx never is, and neither is a first-byte timeout (the upstream
may be working on it). A 3xx is never followed (the upstream key must not reach another
host): it is a 502. Error bodies are read to at most 64 KiB. A stream asked for must come
back as `text/event-stream`. Callers get an open 2xx response (close it with `aclose()`), or
an ApiError ready to send.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import httpx

from service.upstream.body import is_event_stream, read_error_body
from service.upstream.client import Upstream
from service.upstream.errors import (
    normalise_upstream_error,
    upstream_bad_answer,
    upstream_redirect,
    upstream_timeout,
    upstream_unreachable,
)

JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"

_RETRY_STATUSES = frozenset({502, 503, 504})
_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 2.0


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    first_byte_timeout: float
    retries: int
    max_response_bytes: int = 64 * 1024 * 1024  # a non-streaming answer's cap


async def open_upstream(
    upstream: Upstream,
    method: str,
    path: str,
    policy: UpstreamPolicy,
    body: bytes | None = None,
    accept: bytes = JSON,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> httpx.Response:
    """Send the request and return the 2xx response with its body unread.

    `accept=EVENT_STREAM` asks for a stream: a 2xx of another media type is a 502. `extra`:
    headers of this request only.
    """
    attempt = 0
    while True:
        request = upstream.request(method, path, body, accept, extra)
        try:
            async with asyncio.timeout(policy.first_byte_timeout):
                response = await upstream.send(request)
        except TimeoutError:
            raise upstream_timeout(f"no response within {policy.first_byte_timeout:g}s") from None
        except httpx.TimeoutException as exc:
            # The aiohttp transport maps some refused/dropped connections to ConnectTimeout.
            if attempt < policy.retries:
                attempt += 1
                await _backoff(attempt)
                continue
            raise upstream_unreachable(_describe(exc)) from None
        except httpx.TransportError as exc:
            if attempt < policy.retries:
                attempt += 1
                await _backoff(attempt)
                continue
            raise upstream_unreachable(_describe(exc)) from None
        status = response.status_code
        if status < 300:
            if accept == EVENT_STREAM and not is_event_stream(response):
                await response.aclose()
                media = response.headers.get("content-type", "")
                raise upstream_bad_answer(
                    f"a {status} with Content-Type {media!r} where a stream was asked for"
                )
            return response
        if status < 400:
            await response.aclose()
            raise upstream_redirect(status, response.headers.get("location"))
        if status in _RETRY_STATUSES and attempt < policy.retries:
            await response.aclose()
            attempt += 1
            await _backoff(attempt)
            continue
        payload = await read_error_body(response)
        raise normalise_upstream_error(status, payload, response.headers.get("retry-after"))


async def _backoff(attempt: int) -> None:
    # Full jitter: spread retries of many clients hit by the same upstream blip.
    await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
