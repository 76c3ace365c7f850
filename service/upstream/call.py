"""One upstream request: first-byte deadline, retries before the first byte, error rewriting.

Connection failures and 502/503/504 answers are retried with jittered exponential backoff
(UPSTREAM_RETRIES times); a 4xx never is, and neither is a first-byte timeout (the upstream
may be working on it). Callers get an open 2xx response (close it with `aclose()`), or an
ApiError ready to send.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import httpx

from service.upstream.client import Upstream
from service.upstream.errors import (
    normalise_upstream_error,
    upstream_timeout,
    upstream_unreachable,
)

_RETRY_STATUSES = frozenset({502, 503, 504})
_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 2.0


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    first_byte_timeout: float
    retries: int


async def open_upstream(
    upstream: Upstream,
    method: str,
    path: str,
    policy: UpstreamPolicy,
    body: bytes | None = None,
    accept: bytes = b"application/json",
) -> httpx.Response:
    """Send the request and return the response with its body unread."""
    attempt = 0
    while True:
        request = upstream.request(method, path, body, accept)
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
        if response.status_code < 400:
            return response
        if response.status_code in _RETRY_STATUSES and attempt < policy.retries:
            await response.aclose()
            attempt += 1
            await _backoff(attempt)
            continue
        try:
            payload = await response.aread()
        except httpx.HTTPError:
            payload = b""
        finally:
            await response.aclose()
        raise normalise_upstream_error(
            response.status_code, payload, response.headers.get("retry-after")
        )


async def _backoff(attempt: int) -> None:
    # Full jitter: spread retries of many clients hit by the same upstream blip.
    await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
