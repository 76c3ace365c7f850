"""The simulated model: which names it serves and what it answers.

It answers a fixed story, one word a chunk (after a remark on the image, if the prompt has one),
repeated as often as the requested chunk count needs.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

_STORY = (
    "Once upon a time a small ship left the quiet harbour of Europa and sailed toward the "
    "rings of a distant giant where the crew found a signal nobody had heard before"
)
_WORDS = tuple(_STORY.split(" "))
_IMAGE_WORDS = ("I", "see", "an", "image:")


def answer_words(chunks: int, image: bool = False) -> list[str]:
    """The answer, one word a chunk: the story (after a remark on the image, if any), repeated."""
    words = list(_IMAGE_WORDS if image else ()) + list(_WORDS)
    while len(words) < chunks:
        words += _WORDS
    return words[:chunks]


@lru_cache(maxsize=512)
def word_json(word: str, last: bool) -> bytes:
    """A word as a JSON string, with the space that separates it from the next one."""
    return json.dumps(word if last else word + " ").encode()


def model_error(model: Any) -> str | None:
    """xAI's message for a model it does not serve, or None."""
    if isinstance(model, str) and model.startswith(("grok-", "sim-")):
        return None
    return f"The model {model} does not exist or your team does not have access to it."
