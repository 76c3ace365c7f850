"""What this process holds for the requests in flight, under caps that keep one tenant's
traffic from exhausting the memory every tenant's requests share (SPEC 15).

- Bodies: the bytes of request bodies read (then parsed, then sent upstream) and of upstream
  answers read whole, weighted by BODY_WEIGHT, at most GATEWAY_MAX_INFLIGHT_BODY_BYTES at
  once, and at most OWNER_SHARE of that for one tenant (a key without one is its own), so one
  tenant's large bodies always leave room for the others'; beyond either, 503 `server_busy`
  with Retry-After. Given back when the request ends.
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
OWNER_SHARE = 0.5  # of the bodies cap, for one tenant's requests together


@dataclass(slots=True)
class InFlight:
    max_body_bytes: int  # GATEWAY_MAX_INFLIGHT_BODY_BYTES, weighted as BODY_WEIGHT says
    body_bytes: int = 0  # weighted bytes held now
    by_owner: dict[str, int] = field(default_factory=dict)  # tenant -> weighted bytes held
    by_key: dict[str, int] = field(default_factory=dict)  # key id -> requests past auth

    def take(self, size: int, owner: str) -> int:
        """Hold `size` bytes of a body for `owner` (a tenant); the weighted amount to give
        back when the request ends. Raises ApiError 503 `server_busy` (nothing held) past
        the cap, or past the owner's share of it."""
        weighted = size * BODY_WEIGHT
        if self.body_bytes + weighted > self.max_body_bytes:
            raise _busy("The gateway holds as many request bodies as it may at once")
        held = self.by_owner.get(owner, 0) + weighted
        if held > self.max_body_bytes * OWNER_SHARE:
            raise _busy("This tenant's request bodies in flight are at their share of the cap")
        self.body_bytes += weighted
        self.by_owner[owner] = held
        return weighted

    def give(self, weighted: int, owner: str) -> None:
        self.body_bytes -= weighted
        held = self.by_owner.get(owner, 0) - weighted
        if held > 0:
            self.by_owner[owner] = held
        else:
            self.by_owner.pop(owner, None)


def _busy(why: str) -> ApiError:
    BODIES_REFUSED.inc()
    return ApiError(
        503,
        f"{why}; retry shortly.",
        code="server_busy",
        type="server_error",
        headers=[(b"retry-after", b"1")],
    )
