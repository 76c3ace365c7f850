"""Prometheus metrics: one module-level registry of the gateway's series.

Label values are bounded: key ids and tenants come from the key registry (operator-controlled),
models are names the upstream charged for (cut to 128 characters), statuses and reasons come
from fixed sets. With several workers per pod, set PROMETHEUS_MULTIPROC_DIR
(the CLI does it for GATEWAY_WORKERS > 1) and prometheus-client aggregates across processes.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_children: dict[tuple[object, tuple[str, ...]], object] = {}


def labelled(metric: Counter, *values: str) -> Counter:
    """`metric.labels(*values)`, remembered: the per-request counters take their child from a
    dict instead of prometheus-client's checks and lock on every call. Bounded as the label
    values are (above); children are never removed here."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child  # type: ignore[return-value]


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "gateway_requests_total", "API requests answered, by key id and status", ["key_id", "status"]
)
REJECTIONS = Counter(
    "gateway_rejections_total", "Requests refused by the gateway itself, by reason", ["reason"]
)
ACTIVE_STREAMS = Gauge(
    "gateway_active_streams", "SSE streams being relayed now", multiprocess_mode="livesum"
)
TTFB = Histogram(
    "gateway_ttfb_seconds", "Time from request to first response byte", buckets=_LATENCY_BUCKETS
)
DURATION = Histogram(
    "gateway_request_duration_seconds", "Time from request to last byte", buckets=_DURATION_BUCKETS
)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Upstream failures, by kind", ["kind"])
LIMITER_STORE_ERRORS = Counter(
    "gateway_limiter_store_errors_total", "Errors talking to the limiter store (Redis)"
)
LIMITER_FALLBACK = Gauge(
    "gateway_limiter_fallback_active",
    "1 while this replica counts on local in-memory limits because Redis is unreachable",
    multiprocess_mode="max",
)
UPSTREAM_UP = Gauge(
    "gateway_upstream_up",
    "1 while the upstream's key-status endpoint (GET /api-key) says the gateway's key is usable "
    "and the upstream is not out of credits, by upstream name",
    ["upstream"],
    multiprocess_mode="livemin",
)
LIMITER_REPLAY_PENDING = Gauge(
    "gateway_limiter_replay_pending",
    "Releases (slots, charges) kept in memory until Redis answers again",
    multiprocess_mode="livesum",
)
LIMITER_REPLAY_DROPPED = Counter(
    "gateway_limiter_replay_dropped_total",
    "Kept releases dropped because the replay queue was full (their charges are lost)",
)
TOKENS = Counter(
    "gateway_tokens_total",
    "Tokens the upstream reported, by tenant, model (as the client named it) and kind "
    "(input, cached_input, output, reasoning)",
    ["tenant", "model", "kind"],
)
COST_USD = Counter(
    "gateway_cost_usd_total",
    "What requests cost in USD, by tenant and model (as the client named it)",
    ["tenant", "model"],
)
KEY_RELOADS = Counter(
    "gateway_key_registry_reloads_total", "Key registry reloads, by result", ["result"]
)
KEY_STORE_UP = Gauge(
    "gateway_key_store_up",
    "1 while the admin API's key store (Redis) answers; 0: the keys known are served, "
    "admin writes get 503",
    multiprocess_mode="livemin",
)
KEY_STORE_UPDATES = Counter(
    "gateway_key_store_updates_total",
    "Changes to the admin API's keys applied by this replica: 'notice' (one record re-read) "
    "or 'reload' (every record: start-up, a gap, a lost notice)",
    ["how"],
)

CONNECTIONS_REFUSED = Counter(
    "gateway_connections_refused_total",
    "Client connections closed at once: the worker had GATEWAY_MAX_CONNECTIONS open",
)
BODIES_REFUSED = Counter(
    "gateway_bodies_refused_total",
    "Requests answered 503 server_busy: bodies in flight reached GATEWAY_MAX_INFLIGHT_BODY_BYTES",
)


def render() -> tuple[bytes, str]:
    """Return the exposition body and its content type (multiprocess-aware)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
