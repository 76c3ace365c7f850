"""Rate-limit response headers: OpenAI's `x-ratelimit-*` and the IETF draft's `RateLimit*`.

Both describe the most restrictive window (least remaining) of the key and its tenant. The
IETF fields follow draft-ietf-httpapi-ratelimit-headers (structured fields):
`RateLimit-Policy: "requests";q=600;w=60` and `RateLimit: "requests";r=599;t=42`.
"""

from __future__ import annotations

import math

from service.limiter.base import Decision, WindowState


def duration(seconds: float) -> str:
    """OpenAI's reset format: whole seconds, rounded up, at least one: `1s`, `6m0s`, `1h0m5s`."""
    total = max(1, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    policies: list[str] = []
    states: list[str] = []
    for name, state in (("requests", decision.requests), ("tokens", decision.tokens)):
        if state is None:
            continue
        _openai(headers, name, state)
        policies.append(f'"{name}";q={state.limit};w={state.window_seconds}')
        states.append(f'"{name}";r={state.remaining};t={max(1, math.ceil(state.reset_seconds))}')
    if policies:
        headers.append((b"ratelimit-policy", ", ".join(policies).encode()))
        headers.append((b"ratelimit", ", ".join(states).encode()))
    if not decision.allowed:
        headers.append((b"retry-after", str(max(1, decision.retry_after)).encode()))
    return headers


def _openai(headers: list[tuple[bytes, bytes]], name: str, state: WindowState) -> None:
    headers.append((f"x-ratelimit-limit-{name}".encode(), str(state.limit).encode()))
    headers.append((f"x-ratelimit-remaining-{name}".encode(), str(state.remaining).encode()))
    headers.append((f"x-ratelimit-reset-{name}".encode(), duration(state.reset_seconds).encode()))
