"""What the routes share: settings, the upstream pool, the limiter, the ledger, the registry
and the admin API's key store, streams.

Built by `service.app.create_app`; the lifespan opens the resources and closes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.limiter.base import Limiter
from service.registry.follow import StoreFollower
from service.registry.reload import RegistryHolder
from service.server.inflight import InFlight
from service.server.lifecycle import LIFECYCLE, Lifecycle
from service.settings import Settings
from service.sse import StreamSet
from service.upstream.call import UpstreamPolicy
from service.upstream.pool import UpstreamPool
from service.upstream.status import UpstreamStatus
from service.usage.ledger import Ledger


@dataclass(slots=True)
class Services:
    settings: Settings
    limiter: Limiter
    ledger: Ledger  # what the admin usage report reads
    registry: RegistryHolder
    keys: StoreFollower  # the admin API's key store, followed by this replica
    streams: StreamSet
    inflight: InFlight  # the bodies and per-key requests this process holds
    lifecycle: Lifecycle = field(default_factory=lambda: LIFECYCLE)
    pool: UpstreamPool | None = None  # the upstreams, opened in the lifespan

    @property
    def upstream_status(self) -> UpstreamStatus | None:
        """The first upstream's key status (the only one without `[[upstreams]]`)."""
        return self.pool.first.status if self.pool is not None else None

    @property
    def upstream_policy(self) -> UpstreamPolicy:
        return UpstreamPolicy(
            first_byte_timeout=self.settings.first_byte_timeout,
            retries=self.settings.upstream_retries,
            max_response_bytes=self.settings.upstream_max_response_bytes,
        )
