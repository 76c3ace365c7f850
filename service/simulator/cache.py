"""xAI's prompt cache, as the simulator models it: per conversation id, the prompts seen.

xAI keeps a conversation's prompt prefix on the server that `x-grok-conv-id` routes it to; a
later request whose prompt starts with a prefix seen before is billed that prefix as cached
input (`usage.prompt_tokens_details.cached_tokens`, at the cached price: about a quarter of
fresh input). Without the header a request lands on any server, cache-cold: nothing cached.
Tokens are the simulator's words (`usage.py`), images excluded.
"""

from __future__ import annotations

import collections
from typing import Any

PROMPTS_KEPT = 4  # per conversation: the latest prompts, each a candidate prefix


class PromptCache:
    def __init__(self, max_conversations: int = 10_000) -> None:
        self.max_conversations = max_conversations
        self._seen: collections.OrderedDict[str, list[tuple[str, ...]]] = collections.OrderedDict()

    def cached(self, conversation: str, words: tuple[str, ...]) -> int:
        """Tokens of `words` a prompt seen before on `conversation` already holds; remembers
        `words` for the next request."""
        prompts = self._seen.pop(conversation, [])
        hit = max((_shared(seen, words) for seen in prompts), default=0)
        self._seen[conversation] = [*prompts[-(PROMPTS_KEPT - 1) :], words]
        while len(self._seen) > self.max_conversations:
            self._seen.popitem(last=False)
        return hit

    def clear(self) -> None:
        self._seen.clear()


def _shared(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prompt_words(value: Any) -> list[str]:
    """The prompt's text words in order (strings, messages, content parts, at any depth)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [word for item in value for word in prompt_words(item)]
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image"):
            return []
        return prompt_words(value.get("content", value.get("text", "")))
    return []


def with_cached_tokens(path: str, body: Any, conversation: str | None, cache: PromptCache) -> Any:
    """`body` with `sim.cached_tokens` set from the cache for a chat or Responses request
    that names a conversation (a request's own `sim.cached_tokens` wins; a Responses request
    that continues a stored response is cached by its history instead)."""
    if not conversation or not isinstance(body, dict):
        return body
    sim = body.get("sim", {})
    if not isinstance(sim, dict) or "cached_tokens" in sim:
        return body
    if path == "/v1/chat/completions":
        words = prompt_words(body.get("messages"))
    elif path == "/v1/responses" and body.get("previous_response_id") is None:
        words = prompt_words(body.get("instructions") or "") + prompt_words(body.get("input"))
    else:
        return body
    hit = cache.cached(conversation, tuple(words))
    return {**body, "sim": {**sim, "cached_tokens": hit}} if hit else body
