"""The simulator's configuration and its mutable state: stats, key status, stored responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.simulator.cache import PromptCache
from service.simulator.store import ResponseStore
from service.simulator.wire import Watch

KEY_STATUSES = ("ok", "blocked", "disabled")


@dataclass
class SimulatorConfig:
    """Defaults for every request; a request's `"sim"` body field overrides them."""

    chunks: int = 20
    delay_ms: float = 0
    first_byte_delay_ms: float = 0
    api_key: str | None = None  # accept only this key (others get xAI's 400)
    fault: str | None = None
    fault_after: int = 2
    openai_shapes: bool = False  # OpenAI's stream and usage shapes instead of xAI's
    key_status: str = "ok"  # what /v1/api-key reports at start: ok, blocked or disabled
    max_stored_responses: int = 10_000
    team_answer: str | None = None  # every inference call answers so (faults.TEAM_ANSWERS)


@dataclass
class Stats:
    """Counters for `/sim/stats`; tests read them."""

    requests: int = 0
    chat_requests: int = 0
    responses_requests: int = 0
    image_requests: int = 0
    api_key_requests: int = 0
    refused_requests: int = 0  # inference calls answered by `team_answer`
    streams_started: int = 0
    streams_completed: int = 0
    disconnects: int = 0
    active_streams: int = 0
    last_request: dict[str, Any] | None = None


class State:
    """Everything `POST /sim/reset` puts back as it was at start."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.key_status = config.key_status
        self.responses = ResponseStore(config.max_stored_responses)
        self.fault_counts: dict[str, int] = {}
        self.team_answer = config.team_answer
        self.prompt_cache = PromptCache()

    def reset(self) -> None:
        # Streams still running keep counting as active (and end on the new counters).
        self.stats = Stats(active_streams=self.stats.active_streams)
        self.key_status = self.config.key_status
        self.responses.clear()
        self.fault_counts.clear()
        self.team_answer = self.config.team_answer
        self.prompt_cache.clear()

    def stream_started(self) -> None:
        self.stats.streams_started += 1
        self.stats.active_streams += 1

    def stream_ended(self, watch: Watch, completed: bool) -> None:
        """Counts a stream as ended: completed, or left by its client, or neither (a fault)."""
        self.stats.active_streams -= 1
        if completed:
            self.stats.streams_completed += 1
        if watch.disconnected:
            self.stats.disconnects += 1

    def public_stats(self) -> dict[str, Any]:
        s = self.stats
        return {
            **{k: v for k, v in vars(s).items() if k != "last_request"},
            "stored_responses": len(self.responses),
            "key_status": self.key_status,
            "last_request": s.last_request,
        }
