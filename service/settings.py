"""Every environment variable the gateway reads, parsed and validated in one place.

`Settings.from_env()` raises ConfigError with one line naming the variable at fault; the CLI
prints that line and exits non-zero, so a bad deployment never half-starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_REDIS_SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster", "unix")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8000
    xai_api_key: str = ""
    xai_base_url: str = "https://api.x.ai/v1"
    redis_url: str | None = None
    redis_timeout: float = 1.0
    redis_pool_size: int = 32
    keys_file: str = ""
    keys_reload_seconds: float = 2.0
    failure_mode: str = "local"
    max_body_bytes: int = 20 * 1024 * 1024
    max_inflight_body_bytes: int = 256 * 1024 * 1024
    max_connections: int | None = None  # None: from the file-descriptor limit at start
    header_timeout: float = 15.0
    body_timeout: float = 15.0
    lease_seconds: float = 30.0
    vision_fallback: str = "json"
    stream_usage: str = "openai"  # `passthrough`: xAI's usage-on-every-chunk, byte for byte
    connect_timeout: float = 5.0
    first_byte_timeout: float = 60.0
    idle_timeout: float = 120.0
    upstream_retries: int = 2
    upstream_max_connections: int = 10000
    keepalive_seconds: float = 15.0
    sse_max_event_bytes: int = 1024 * 1024
    upstream_max_response_bytes: int = 64 * 1024 * 1024
    upstream_status_interval: float = 60.0
    default_vision_model: str = "grok-4.3"
    default_image_model: str = "grok-imagine-image"
    drain_delay: float = 5.0
    shutdown_grace: float = 60.0
    workers: int = 1
    log_level: str = "info"
    log_prompts: bool = False
    cache_affinity: bool = True  # derive x-grok-conv-id when a client sends none
    usage_retention_days: int = 400
    # OpenTelemetry export (service/observability/tracing.py): on when an OTLP endpoint is set.
    otel_traces: bool = False
    otel_metrics: bool = False
    demo: bool = False
    demo_key: str = ""  # GATEWAY_DEMO_KEY: the demo's key, kept across restarts; "" = a new one

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, demo: bool = False) -> Settings:
        """Read and validate the environment. Raises ConfigError on the first bad value."""
        env = os.environ if env is None else env
        r = _Reader(env)
        d = cls()  # the defaults (with slots, class attributes are descriptors, not values)
        settings = cls(
            host=r.get("GATEWAY_HOST", str, d.host),
            port=r.get("GATEWAY_PORT", _port, d.port),
            xai_api_key=r.get("XAI_API_KEY", str, ""),
            xai_base_url=r.get("XAI_BASE_URL", _http_url, d.xai_base_url),
            redis_url=r.get("REDIS_URL", _redis_url, None),
            redis_timeout=r.get("REDIS_TIMEOUT_SECONDS", _positive_float, d.redis_timeout),
            redis_pool_size=r.get("REDIS_POOL_SIZE", _positive_int, d.redis_pool_size),
            keys_file=r.get("GATEWAY_KEYS_FILE", str, ""),
            keys_reload_seconds=r.get(
                "GATEWAY_KEYS_RELOAD_SECONDS", _positive_float, d.keys_reload_seconds
            ),
            failure_mode=r.get("RATE_LIMIT_FAILURE_MODE", _choice("local", "closed"), "local"),
            max_body_bytes=r.get("GATEWAY_MAX_BODY_BYTES", _positive_int, d.max_body_bytes),
            max_inflight_body_bytes=r.get(
                "GATEWAY_MAX_INFLIGHT_BODY_BYTES", _positive_int, d.max_inflight_body_bytes
            ),
            max_connections=r.get("GATEWAY_MAX_CONNECTIONS", _positive_int, None),
            header_timeout=r.get(
                "GATEWAY_HEADER_TIMEOUT_SECONDS", _positive_float, d.header_timeout
            ),
            body_timeout=r.get("GATEWAY_BODY_TIMEOUT_SECONDS", _positive_float, d.body_timeout),
            lease_seconds=r.get("CONCURRENCY_LEASE_SECONDS", _positive_float, d.lease_seconds),
            vision_fallback=r.get("VISION_STREAM_FALLBACK", _choice("json", "sse"), "json"),
            stream_usage=r.get("GATEWAY_STREAM_USAGE", _choice("openai", "passthrough"), "openai"),
            connect_timeout=r.get("UPSTREAM_CONNECT_TIMEOUT", _positive_float, d.connect_timeout),
            first_byte_timeout=r.get(
                "UPSTREAM_FIRST_BYTE_TIMEOUT", _positive_float, d.first_byte_timeout
            ),
            idle_timeout=r.get("UPSTREAM_IDLE_TIMEOUT", _positive_float, d.idle_timeout),
            upstream_retries=r.get("UPSTREAM_RETRIES", _non_negative_int, d.upstream_retries),
            upstream_max_connections=r.get(
                "UPSTREAM_MAX_CONNECTIONS", _positive_int, d.upstream_max_connections
            ),
            keepalive_seconds=r.get("SSE_KEEPALIVE_SECONDS", _positive_float, d.keepalive_seconds),
            sse_max_event_bytes=r.get("SSE_MAX_EVENT_BYTES", _positive_int, d.sse_max_event_bytes),
            upstream_max_response_bytes=r.get(
                "UPSTREAM_MAX_RESPONSE_BYTES", _positive_int, d.upstream_max_response_bytes
            ),
            upstream_status_interval=r.get(
                "UPSTREAM_STATUS_INTERVAL_SECONDS", _positive_float, d.upstream_status_interval
            ),
            default_vision_model=r.get("DEFAULT_VISION_MODEL", _model_name, d.default_vision_model),
            default_image_model=r.get("DEFAULT_IMAGE_MODEL", _model_name, d.default_image_model),
            drain_delay=r.get("GATEWAY_DRAIN_DELAY_SECONDS", _non_negative_float, d.drain_delay),
            shutdown_grace=r.get(
                "GATEWAY_SHUTDOWN_GRACE_SECONDS", _non_negative_float, d.shutdown_grace
            ),
            workers=r.get("GATEWAY_WORKERS", _positive_int, d.workers),
            log_level=r.get(
                "LOG_LEVEL", _choice("debug", "info", "warning", "error", "critical"), "info"
            ),
            log_prompts=r.get("LOG_PROMPTS", _bool, False),
            cache_affinity=r.get("GATEWAY_CACHE_AFFINITY", _bool, d.cache_affinity),
            usage_retention_days=r.get(
                "USAGE_RETENTION_DAYS", _positive_int, d.usage_retention_days
            ),
            otel_traces=_otel_signal(env, "TRACES"),
            otel_metrics=_otel_signal(env, "METRICS"),
            demo=demo,
            demo_key=r.get("GATEWAY_DEMO_KEY", _demo_key, ""),
        )
        if not demo:
            if not settings.xai_api_key:
                raise ConfigError("XAI_API_KEY is required (or run with --demo)")
            if not settings.keys_file:
                raise ConfigError("GATEWAY_KEYS_FILE is required (or run with --demo)")
        return settings


@dataclass(frozen=True, slots=True)
class AdminClientSettings:
    """What the CLI's `keys`/`tenants` commands need to call a gateway's admin API."""

    url: str = "http://127.0.0.1:8000"  # GATEWAY_URL: the gateway to call
    admin_key: str = ""  # GATEWAY_ADMIN_KEY: an [[admin_keys]] secret

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AdminClientSettings:
        env = os.environ if env is None else env
        r = _Reader(env)
        return cls(
            url=r.get("GATEWAY_URL", _http_url, cls().url),
            admin_key=r.get("GATEWAY_ADMIN_KEY", str, ""),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{name}={raw!r}: {exc}") from None


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError("must be a port number between 1 and 65535")
    return port


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be zero or a positive number of seconds")
    return value


def _model_name(raw: str) -> str:
    if any(c.isspace() for c in raw) or len(raw) > 256:
        raise ValueError("must be a model name (no spaces)")
    return raw


def _demo_key(raw: str) -> str:
    if len(raw) < 8 or len(raw) > 256 or not raw.isascii() or any(c.isspace() for c in raw):
        raise ValueError("must be 8 to 256 printable ASCII characters, no spaces")
    return raw


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw.lower()

    return parse


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def _otel_signal(env: Mapping[str, str], signal: str) -> bool:
    """Whether OpenTelemetry exports `signal` (TRACES or METRICS): an OTLP endpoint is set
    for it (OTEL_EXPORTER_OTLP_ENDPOINT or its own), unless OTEL_SDK_DISABLED=true or
    OTEL_<signal>_EXPORTER=none. The SDK reads the other OTEL_* variables itself."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    endpoints = (f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    endpoint = next((name for name in endpoints if env.get(name, "").strip()), None)
    if endpoint is None:
        return False
    exporter = env.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "none":
        return False
    if exporter != "otlp":
        raise ConfigError(f"OTEL_{signal}_EXPORTER={exporter!r}: the gateway exports otlp or none")
    url = env[endpoint].strip()
    try:
        _http_url(url)
    except ValueError as exc:
        raise ConfigError(f"{endpoint}={url!r}: {exc}") from None
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol and protocol != "http/protobuf":
            raise ConfigError(
                f"{name}={protocol!r}: the gateway exports OTLP over http/protobuf only"
            )
    return True


def _redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in _REDIS_SCHEMES)}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("has no host")
    return raw
