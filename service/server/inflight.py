"""What this process holds for the requests in flight, under caps that keep one tenant's
traffic from exhausting the memory every tenant's requests share (SPEC 15).

- Bodies: the bytes of request bodies read (then parsed, then sent upstream) and of upstream
  answers read whole, weighted by BODY_WEIGHT, at most GATEWAY_MAX_INFLIGHT_BODY_BYTES at
  once; beyond, 503 `server_busy` with Retry-After. Given back when the request ends.
- Requests per key: a key already holding its concurrency cap of requests on this process
  gets 429 before its body is read (the shared count in Redis can only be higher).

One per process, made by the app; everything runs on its one event loop, so no lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.http.errors import ApiError
from service.observability.metrics import BODIES_REFUSED

# What a body held costs in memory per byte: the bytes, the parsed objects, the copy encoded
# for the upstream (docs/performance.md: a 19 MB body held ~72 MB of RSS while in flight).
BODY_WEIGHT = 4


@dataclass(slots=True)
class InFlight:
    max_body_bytes: int  # GATEWAY_MAX_INFLIGHT_BODY_BYTES, weighted as BODY_WEIGHT says
    body_bytes: int = 0  # weighted bytes held now
    by_key: dict[str, int] = field(default_factory=dict)  # key id -> requests past auth

    def take(self, size: int) -> int:
        """Hold `size` bytes of a body; the weighted amount to give back when the request
        ends. Raises ApiError 503 `server_busy` (nothing held) past the cap."""
        weighted = size * BODY_WEIGHT
        if self.body_bytes + weighted > self.max_body_bytes:
            BODIES_REFUSED.inc()
            raise ApiError(
                503,
                "The gateway holds as many request bodies as it may at once; retry shortly.",
                code="server_busy",
                type="server_error",
                headers=[(b"retry-after", b"1")],
            )
        self.body_bytes += weighted
        return weighted

    def give(self, weighted: int) -> None:
        self.body_bytes -= weighted
