"""Process-wide run state: whether this replica is draining for shutdown."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Lifecycle:
    """Set `draining` on SIGTERM: /readyz answers 503 and new API requests are refused."""

    draining: bool = False


# This process's lifecycle. The server's signal handler and the app share it, also in worker
# processes, where each imports it afresh.
LIFECYCLE = Lifecycle()
