"""Token counts and their cost in ticks (1 USD = 10^10 ticks), exact integers from a price table.

Counting is deterministic, not a tokenizer: one prompt token per whitespace-separated word of
text (at least 1), `IMAGE_TOKENS` per image part, one completion token per content chunk, and
for reasoning models (`reasoning` in the name, not `non-reasoning`) a fixed number of
reasoning tokens (`DEFAULT_REASONING_TOKENS`, or `sim.reasoning_tokens`), spent before the first
content chunk. Prices are xAI's list prices in USD per million tokens, i.e. ticks per token =
USD per million x 10^4, so every cost is an exact integer:

    cost = uncached_prompt x input + cached x cached_input + (completion + reasoning) x output

Chat Completions reports reasoning apart from `completion_tokens` (total = prompt + completion +
reasoning), as xAI does; the Responses API counts it inside `output_tokens`, as xAI does there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGE_TOKENS = 256
DEFAULT_REASONING_TOKENS = 64


@dataclass(frozen=True, slots=True)
class Price:
    """Ticks per token (input, cached input, output) and per generated image."""

    input: int
    cached_input: int
    output: int
    image: int = 0


# Ticks per token = USD per million tokens x 10^4; an image's price is per image.
PRICES: dict[str, Price] = {
    "grok-4-1-fast-non-reasoning": Price(2_000, 500, 5_000),  # $0.20 / $0.05 / $0.50
    "grok-4-1-fast-reasoning": Price(2_000, 500, 5_000),  # $0.20 / $0.05 / $0.50
    "grok-4": Price(30_000, 7_500, 150_000),  # $3.00 / $0.75 / $15.00
    "grok-code-fast-1": Price(2_000, 200, 15_000),  # $0.20 / $0.02 / $1.50
    "grok-2-vision-1212": Price(20_000, 20_000, 100_000),  # $2.00 / $2.00 / $10.00
    "grok-2-image-1212": Price(0, 0, 0, image=700_000_000),  # $0.07 an image
    "grok-imagine-image": Price(0, 0, 0, image=200_000_000),  # $0.02 an image
}
DEFAULT_PRICE = PRICES["grok-4-1-fast-non-reasoning"]  # any other model (`sim-*`, new names)
DEFAULT_IMAGE_PRICE = PRICES["grok-2-image-1212"]
MODELS = tuple(PRICES)


def price_of(model: str) -> Price:
    return PRICES.get(model, DEFAULT_PRICE)


def image_price_of(model: str) -> Price:
    found = PRICES.get(model)
    return found if found is not None and found.image else DEFAULT_IMAGE_PRICE


def is_reasoning(model: str) -> bool:
    return "reasoning" in model and "non-reasoning" not in model


def count_input(value: Any) -> tuple[int, int]:
    """(text tokens, image tokens) of a prompt: strings, messages, content parts, at any depth."""
    if isinstance(value, str):
        return len(value.split()), 0
    if isinstance(value, list):
        text = image = 0
        for item in value:
            t, i = count_input(item)
            text, image = text + t, image + i
        return text, image
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image"):
            return 0, IMAGE_TOKENS
        return count_input(value.get("content", value.get("text", "")))
    return 0, 0


@dataclass(slots=True)
class Tokens:
    """One request's token counts; `completion` is the number of content chunks."""

    text: int  # prompt text tokens (history included)
    image: int
    cached: int
    completion: int
    reasoning: int
    price: Price

    @classmethod
    def of(
        cls,
        model: str,
        text: int,
        image: int,
        completion: int,
        cached: int | None,
        reasoning: int | None,
    ) -> Tokens:
        """Counts for `model`; `cached` and `reasoning` are the request's `sim` overrides."""
        if not image:
            text = max(1, text)
        spent = 0
        if is_reasoning(model):
            spent = DEFAULT_REASONING_TOKENS if reasoning is None else max(0, reasoning)
        cached = min(max(0, cached or 0), text + image)
        return cls(text, image, cached, completion, spent, price_of(model))

    @property
    def prompt(self) -> int:
        return self.text + self.image

    def cost(self, completion: int) -> int:
        """Ticks billed once `completion` content tokens have been generated."""
        p = self.price
        return (
            (self.prompt - self.cached) * p.input
            + self.cached * p.cached_input
            + (completion + self.reasoning) * p.output
        )

    def chat(self, completion: int | None = None) -> dict[str, Any]:
        """xAI's chat `usage` after `completion` tokens (all of them by default)."""
        done = self.completion if completion is None else completion
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": done,
            "total_tokens": self.prompt + done + self.reasoning,
            "prompt_tokens_details": {
                "text_tokens": self.text,
                "audio_tokens": 0,
                "image_tokens": self.image,
                "cached_tokens": self.cached,
            },
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            "num_sources_used": 0,
            "cost_in_usd_ticks": self.cost(done),
        }

    def openai_chat(self) -> dict[str, Any]:
        """OpenAI's chat `usage`: reasoning inside `completion_tokens`, no xAI fields."""
        output = self.completion + self.reasoning
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": output,
            "total_tokens": self.prompt + output,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def responses(self, xai: bool = True) -> dict[str, Any]:
        """The Responses API's `usage`: `output_tokens` includes the reasoning tokens."""
        output = self.completion + self.reasoning
        usage: dict[str, Any] = {
            "input_tokens": self.prompt,
            "input_tokens_details": {"cached_tokens": self.cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.prompt + output,
        }
        if xai:
            usage["num_sources_used"] = 0
            usage["num_server_side_tools_used"] = 0
            usage["cost_in_usd_ticks"] = self.cost(self.completion)
        return usage


class RunningChatUsage:
    """`,"usage":{...}` for each chunk of an xAI chat stream, from a prebuilt template.

    The same fields, in the same order, as `Tokens.chat()`. Only three numbers change from chunk
    to chunk (completion and total tokens, cost), so a chunk costs three int-to-bytes
    conversions and a join, never a json.dumps.
    """

    __slots__ = ("_cost", "_output", "_parts", "_total")

    def __init__(self, tokens: Tokens) -> None:
        t = tokens
        self._total = t.prompt + t.reasoning
        self._cost = t.cost(0)
        self._output = t.price.output
        self._parts = (
            b',"usage":{"prompt_tokens":%d,"completion_tokens":' % t.prompt,
            b',"total_tokens":',
            b',"prompt_tokens_details":{"text_tokens":%d,"audio_tokens":0,"image_tokens":%d,'
            b'"cached_tokens":%d},"completion_tokens_details":{"reasoning_tokens":%d,'
            b'"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0},'
            b'"num_sources_used":0,"cost_in_usd_ticks":' % (t.text, t.image, t.cached, t.reasoning),
            b"}",
        )

    def after(self, completion: int) -> bytes:
        """The usage once `completion` content tokens have been generated."""
        a, b, c, d = self._parts
        total = b"%d" % (self._total + completion)
        cost = b"%d" % (self._cost + completion * self._output)
        return b"".join((a, b"%d" % completion, b, total, c, cost, d))
