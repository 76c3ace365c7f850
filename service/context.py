"""The per-request record every layer reads and writes, kept in `scope["gateway"]`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.registry.keys import ApiKey


@dataclass(slots=True)
class RequestContext:
    """What the access log, metrics and limiter need to know about one request."""

    request_id: str
    started: float  # loop.time() at arrival
    key: ApiKey | None = None
    model: str | None = None
    stream: bool = False
    payload: dict[str, Any] | None = None  # the validated JSON body
    body_size: int = 0
    tokens: int = 0  # charged to token budgets on release
    tokens_estimated: bool = False
    reason: str | None = None  # why the gateway refused it, if it did
    status: int = 0
    ttfb: float | None = None  # seconds to the first body byte
    stream_fallback: bool = False
    # Headers every response of this request carries (rate-limit state, fallback flag);
    # appended to http.response.start by the observe middleware.
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
