"""Request-body validation per endpoint, run before the limiter so bad input spends nothing.

Each validator takes the parsed JSON object, raises ApiError(400) naming the field at fault,
and returns it (normalised where the endpoint needs it). Unknown fields are kept as they are:
the upstream may know them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.errors import bad_request

Validator = Callable[[dict[str, Any]], dict[str, Any]]

_ROLES = {"system", "user", "assistant", "tool", "developer", "function"}


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    _require_str(body, "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of message objects", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object", "messages")
        role = message.get("role")
        if role not in _ROLES:
            raise bad_request(
                f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}", "messages"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise bad_request(f"messages[{i}].content must be a string or an array", "messages")
        if isinstance(content, list) and not all(isinstance(p, dict) for p in content):
            raise bad_request(f"messages[{i}].content parts must be objects", "messages")
    _optional_bool(body, "stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("'stream_options' must be an object", "stream_options")
        _optional_bool(options, "include_usage", param="stream_options")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        _optional_int(body, name, minimum=1)
    for name in ("temperature", "top_p"):
        _optional_number(body, name)
    return body


def image_generation(body: dict[str, Any], default_model: str) -> dict[str, Any]:
    _require_str(body, "prompt")
    if "model" in body and body["model"] is not None:
        _require_str(body, "model")
    else:
        body["model"] = default_model
    _optional_int(body, "n", minimum=1, maximum=10)
    _optional_bool(body, "stream")
    fmt = body.get("response_format")
    if fmt is not None and fmt not in ("url", "b64_json"):
        raise bad_request("'response_format' must be 'url' or 'b64_json'", "response_format")
    return body


def vision_analysis(body: dict[str, Any], default_model: str) -> dict[str, Any]:
    _optional_bool(body, "stream")
    if "model" in body and body["model"] is not None:
        _require_str(body, "model")
    else:
        body["model"] = default_model
    if "messages" in body:
        return chat_completion(body)
    url = body.get("image_url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:image/")):
        raise bad_request(
            "'image_url' must be an http(s) URL or a data:image/... URI (or send 'messages')",
            "image_url",
        )
    prompt = body.get("prompt", "Describe this image.")
    if not isinstance(prompt, str):
        raise bad_request("'prompt' must be a string", "prompt")
    detail = body.get("detail")
    if detail is not None and detail not in ("auto", "low", "high"):
        raise bad_request("'detail' must be 'auto', 'low' or 'high'", "detail")
    return body


def has_image_content(messages: list[dict[str, Any]]) -> bool:
    """Whether any message carries an `image_url` content part."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    return True
    return False


def _require_str(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"'{name}' is required and must be a non-empty string", name)


def _optional_bool(body: dict[str, Any], name: str, param: str | None = None) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false", param or name)


def _optional_int(
    body: dict[str, Any], name: str, minimum: int, maximum: int | None = None
) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_request(f"'{name}' must be an integer >= {minimum}", name)
    if maximum is not None and value > maximum:
        raise bad_request(f"'{name}' must be an integer <= {maximum}", name)


def _optional_number(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise bad_request(f"'{name}' must be a number", name)
