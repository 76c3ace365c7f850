"""Read upstream bodies under caps: what the upstream sends is checked, not trusted.

An error body is read to at most 64 KiB (its message is all the gateway needs). A JSON answer
must say it is JSON, fit in UPSTREAM_MAX_RESPONSE_BYTES and be a JSON object; it is read
piece by piece and abandoned as soon as it passes the cap, so a huge or endless body never
sits in memory whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from service.upstream.errors import upstream_bad_answer, upstream_unreachable

ERROR_BODY_MAX_BYTES = 64 * 1024


async def read_capped(
    response: httpx.Response, limit: int, hold: Callable[[int], None] | None = None
) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes (what was read is dropped).
    `hold` is told of each piece kept (it may raise to stop the read). The caller closes the
    response.
    """
    pieces: list[bytes] = []
    size = 0
    async for piece in response.aiter_raw():
        size += len(piece)
        if size > limit:
            return None
        if hold is not None:
            hold(len(piece))
        pieces.append(piece)
    return b"".join(pieces)


async def read_error_body(response: httpx.Response) -> bytes:
    """The first 64 KiB of an error body (enough for any message); closes the response."""
    pieces: list[bytes] = []
    size = 0
    try:
        async for piece in response.aiter_raw():
            pieces.append(piece[: ERROR_BODY_MAX_BYTES - size])
            size += len(piece)
            if size >= ERROR_BODY_MAX_BYTES:
                break
    except httpx.HTTPError:
        pass  # what arrived is the message; the status says the rest
    finally:
        await response.aclose()
    return b"".join(pieces)


def is_json(response: httpx.Response) -> bool:
    """True unless the upstream names a media type that is not JSON."""
    value = response.headers.get("content-type")
    if value is None:
        return True  # unlabelled: parsing decides
    media = value.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def is_event_stream(response: httpx.Response) -> bool:
    """Whether the response says `text/event-stream`. Read from the raw header bytes: httpx's
    `headers.get` decodes every header (guessing their encoding) on each call."""
    for name, value in response.headers.raw:
        if name.lower() == b"content-type":
            return value.partition(b";")[0].strip().lower() == b"text/event-stream"
    return False


async def read_json_object(
    response: httpx.Response, max_bytes: int, hold: Callable[[int], None] | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The body of a 2xx JSON answer and the object it holds; closes the response. `hold` is
    told of the bytes as they are kept (the process's cap on bodies in flight).

    Raises ApiError 502 `upstream_error` for anything else: another media type, a body over
    `max_bytes` (refused from Content-Length, or abandoned once past the cap while reading),
    an empty body, JSON that is not an object.
    """
    try:
        if not is_json(response):
            media = response.headers.get("content-type", "")
            raise upstream_bad_answer(f"a {response.status_code} with Content-Type {media!r}")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise upstream_bad_answer(f"a body of {declared} bytes, over the {max_bytes}-byte cap")
        try:
            raw = await read_capped(response, max_bytes, hold)
        except httpx.HTTPError as exc:
            raise upstream_unreachable(
                f"reading the response failed ({type(exc).__name__})"
            ) from None
        if raw is None:
            raise upstream_bad_answer(f"a body over the {max_bytes}-byte cap")
    finally:
        await response.aclose()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        what = "an empty body" if not raw.strip() else "a body that is not a JSON object"
        raise upstream_bad_answer(what)
    return raw, doc
