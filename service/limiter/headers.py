"""Rate-limit response headers: OpenAI's `x-ratelimit-*` and the IETF draft's `RateLimit*`.

Both describe the most restrictive window (least remaining) of the key and its tenant. The
IETF fields follow draft-ietf-httpapi-ratelimit-headers (structured fields):
`RateLimit-Policy: "requests";q=600;w=60` and `RateLimit: "requests";r=599;t=42`.
"""

from __future__ import annotations

import functools
import math

from service.limiter.base import Decision


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
    policies: list[bytes] = []
    states: list[bytes] = []
    for names, state in ((_REQUESTS, decision.requests), (_TOKENS, decision.tokens)):
        if state is None:
            continue
        limit_name, remaining_name, reset_name, label = names
        reset = max(1, math.ceil(state.reset_seconds))
        headers.append((limit_name, b"%d" % state.limit))
        headers.append((remaining_name, b"%d" % state.remaining))
        headers.append((reset_name, _reset_text(reset)))
        policies.append(b'"%s";q=%d;w=%d' % (label, state.limit, state.window_seconds))
        states.append(b'"%s";r=%d;t=%d' % (label, state.remaining, reset))
    if policies:
        headers.append((b"ratelimit-policy", b", ".join(policies)))
        headers.append((b"ratelimit", b", ".join(states)))
    if not decision.allowed:
        headers.append((b"retry-after", b"%d" % max(1, decision.retry_after)))
    return headers


def _names(kind: str) -> tuple[bytes, bytes, bytes, bytes]:
    return (
        f"x-ratelimit-limit-{kind}".encode(),
        f"x-ratelimit-remaining-{kind}".encode(),
        f"x-ratelimit-reset-{kind}".encode(),
        kind.encode(),
    )


_REQUESTS = _names("requests")
_TOKENS = _names("tokens")


@functools.lru_cache(maxsize=4096)
def _reset_text(seconds: int) -> bytes:
    return duration(seconds).encode()
