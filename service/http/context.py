"""The per-request record every layer reads and writes, kept in `scope["gateway"]`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.redis.keys import owner_of

if TYPE_CHECKING:
    from service.registry.keys import AdminKey, ApiKey
    from service.registry.models import ModelCatalog
    from service.sse.dialects import Dialect
    from service.usage.prices import PriceTable
    from service.usage.record import Usage


@dataclass(slots=True)
class RequestContext:
    """What the access log, metrics and limiter need to know about one request."""

    request_id: str
    started: float  # loop.time() at arrival
    key: ApiKey | None = None  # the tenant key, on /api/v1
    admin: AdminKey | None = None  # the admin key, on /admin/v1
    model: str | None = None
    stream: bool = False
    payload: dict[str, Any] | None = None  # the validated JSON body
    body_size: int = 0
    held_bytes: int = 0  # body bytes (weighted) this request holds in the process's InFlight
    catalog: ModelCatalog | None = None  # the aliases of the registry that authed it
    prices: PriceTable | None = None  # and its [prices], for the charge at release
    usage: Usage | None = None  # what the upstream reported (or an estimate); set by the route
    cost_ticks: int | None = None  # what it cost, set when the limiter releases it
    cost_known: bool = True  # False: no upstream cost and no price for the model
    owned: tuple[str, ...] = ()  # stored object ids (Responses API) the tenant must own
    owned_kinds: dict[str, str] = field(default_factory=dict)  # id -> "item", "conversation"
    response_id: str | None = None  # Responses API id this request created (recorded on release)
    item_ids: tuple[str, ...] = ()  # and the ids of that response's output items
    deleted_response: str | None = None  # Responses API id this request deleted upstream
    pinned_upstream: str | None = None  # the upstream that holds the stored objects it names
    upstream: str | None = None  # the upstream that answered (access log, ownership record)
    conversation: bytes | None = None  # x-grok-conv-id sent upstream (cache affinity)
    reason: str | None = None  # why the gateway refused it, if it did
    status: int = 0
    ttfb: float | None = None  # seconds to the first body byte
    stream_fallback: bool = False
    # For tracing (service/observability/tracing.py), read only when it is on: the upstream's
    # parsed JSON answer or the relayed stream's dialect (the answer's id and model), and
    # the request's TraceRecord (its upstream attempts).
    answer: dict[str, Any] | None = None
    stream_dialect: Dialect | None = None
    trace: Any = None
    # Headers every response of this request carries (rate-limit state, fallback flag);
    # appended to http.response.start by the observe middleware.
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def body_owner(self) -> str:
        """Whose share of the process's bodies in flight this request's bodies count in: its
        key's tenant (a key without one is its own), or its admin key."""
        if self.key is not None:
            return owner_of(self.key.id, self.key.tenant)
        return f"admin:{self.admin.id}" if self.admin is not None else "-"
