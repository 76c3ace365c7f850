"""Cache affinity: the `x-grok-conv-id` each chat and Responses request carries upstream.

xAI's prompt cache lives on one server, and `x-grok-conv-id` routes a conversation's requests
to the same one (cached input costs about a quarter of fresh input). A client's own id (1-128
printable ASCII characters, else 400 before the limiter, so it spends nothing) is forwarded
behind a prefix made from its tenant, so two tenants never share a cache entry. A request
without one gets an id derived from the tenant, the model and the conversation's opening (its
system message or instructions and its first user message), so every turn of a conversation
carries the same id; GATEWAY_CACHE_AFFINITY=off turns the derivation off. A Responses request
that continues a stored response (`previous_response_id`) holds no opening: it gets none.

The body was parsed once by the body middleware; this reads `ctx.payload`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.asgi import header
from service.http.context import RequestContext
from service.http.errors import bad_request
from service.http.json_codec import dumps_compact
from service.redis.keys import owner_of

HEADER = b"x-grok-conv-id"
MAX_ID_CHARS = 128


class ConversationAffinity:
    def __init__(self, app: ASGIApp, derive: bool = True) -> None:
        self.app = app
        self.derive = derive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        given = header(scope, HEADER)
        if given is not None and not _valid(given):
            ctx.reason = "invalid_request_error"
            await bad_request(
                f"x-grok-conv-id must be 1-{MAX_ID_CHARS} printable ASCII characters.",
                "x-grok-conv-id",
            ).send(send)
            return
        if given is not None:
            ctx.conversation = _prefix(ctx) + given
        elif self.derive:
            opening = conversation_opening(ctx.payload)
            if opening is not None:
                summary = _summary([ctx.model, *opening])
                digest = hashlib.sha256(dumps_compact(summary)).hexdigest()
                ctx.conversation = _prefix(ctx) + digest[:32].encode()
        await self.app(scope, receive, send)


_LONG_TEXT = 4096  # characters: a longer string is named by its length and its two ends
_END = 2048


def _summary(value: Any) -> Any:
    """`value` with each long string replaced by its length and its first and last 2,048
    characters: the same for every turn of a conversation, and what a 10 MB prompt costs to
    name stays that of a short one (encoding and hashing it whole held the event loop)."""
    if isinstance(value, str):
        if len(value) <= _LONG_TEXT:
            return value
        return ["long text", len(value), value[:_END], value[-_END:]]
    if isinstance(value, list):
        return [_summary(item) for item in value]
    if isinstance(value, dict):
        return {name: _summary(item) for name, item in value.items()}
    return value


def _valid(value: bytes) -> bool:
    return 0 < len(value) <= MAX_ID_CHARS and all(0x20 <= byte <= 0x7E for byte in value)


def _prefix(ctx: RequestContext) -> bytes:
    """A short hash of the key's tenant (a key without one is its own)."""
    key = ctx.key
    assert key is not None
    owner = owner_of(key.id, key.tenant)
    return hashlib.sha256(owner.encode()).hexdigest()[:12].encode() + b"-"


def conversation_opening(body: dict[str, Any] | None) -> tuple[Any, Any] | None:
    """(system message or instructions, first user message) of a chat or Responses request;
    None when it has no first user message or continues a stored response."""
    if body is None or body.get("previous_response_id") is not None:
        return None
    messages = body.get("messages")
    if isinstance(messages, list):  # chat completions (and vision through chat)
        return _opening(messages, None)
    items = body.get("input")
    instructions = body.get("instructions")
    if isinstance(items, str):  # the same opening as one user message of that text
        return ([instructions] if instructions is not None else []), items
    if isinstance(items, list):
        return _opening(items, instructions)
    return None


def _opening(messages: list[Any], instructions: Any) -> tuple[Any, Any] | None:
    system = [instructions] if instructions is not None else []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(message.get("content"))
        elif role == "user":
            return system, message.get("content")
    return None
