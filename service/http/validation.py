"""Request-body validation per endpoint, run before the limiter so bad input spends nothing.

Each validator takes the parsed JSON object, raises ApiError(400) naming the field at fault,
and returns it (normalised where the endpoint needs it). Known fields are checked at every
depth the gateway or the upstream reads them; unknown fields are kept as they are: the
upstream may know them. (The body middleware has already refused bodies that are not UTF-8
JSON objects, that nest too deeply or that hold non-finite numbers.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from service.http.errors import bad_request

Validator = Callable[[dict[str, Any]], dict[str, Any]]

_ROLES = {"system", "user", "assistant", "tool", "developer", "function"}
# Model names go into logs, metric labels, ledger fields and CSV cells: a short name of
# the characters real model names use, never the ledger's `-` marker (SPEC 15).
MAX_MODEL_CHARS = 128
_MODEL_NAME = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of message objects", "messages")
    for i, message in enumerate(messages):
        _message(message, i)
    # The optional fields the body holds (a few), not every field it might hold (eighteen).
    checks = _CHAT_FIELDS
    for name, value in body.items():
        if value is not None:
            check = checks.get(name)
            if check is not None:
                check(name, value)
    return body


def _message(message: Any, i: int) -> None:
    if not isinstance(message, dict):
        raise bad_request(f"messages[{i}] must be an object", "messages")
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        roles = ", ".join(sorted(_ROLES))
        raise bad_request(f"messages[{i}].role must be one of {roles}", "messages")
    for name in ("name", "tool_call_id"):
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise bad_request(f"messages[{i}].{name} must be a string", "messages")
    calls = message.get("tool_calls")
    if calls is not None and not (
        isinstance(calls, list) and all(isinstance(c, dict) for c in calls)
    ):
        raise bad_request(f"messages[{i}].tool_calls must be an array of objects", "messages")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_request(f"messages[{i}].content must be a string or an array", "messages")
    for j, part in enumerate(content):
        _content_part(part, f"messages[{i}].content[{j}]")


def _content_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise bad_request(f"{where} must be an object", "messages")
    kind = part.get("type")
    if not isinstance(kind, str):
        raise bad_request(f"{where}.type is required and must be a string", "messages")
    if kind == "text" and not isinstance(part.get("text"), str):
        raise bad_request(f"{where}.text must be a string", "messages")
    if kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, str) and not (
            isinstance(image, dict) and isinstance(image.get("url"), str)
        ):
            raise bad_request(f"{where}.image_url must be an object with a 'url'", "messages")


def image_generation(body: dict[str, Any], default_model: str) -> dict[str, Any]:
    _require_str(body, "prompt")
    if "model" in body and body["model"] is not None:
        _require_model(body)
    else:
        body["model"] = default_model
    _optional_int(body, "n", minimum=1, maximum=10)
    _optional_str(body, "user")
    _optional_bool(body, "stream")
    fmt = body.get("response_format")
    if fmt is not None and fmt not in ("url", "b64_json"):
        raise bad_request("'response_format' must be 'url' or 'b64_json'", "response_format")
    return body


def vision_analysis(body: dict[str, Any], default_model: str) -> dict[str, Any]:
    _optional_bool(body, "stream")
    if "model" in body and body["model"] is not None:
        _require_model(body)
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


def response_request(body: dict[str, Any]) -> dict[str, Any]:
    """POST /responses: `model` and `input` are required; everything else is passed on."""
    _require_model(body)
    content = body.get("input")
    if isinstance(content, str):
        if not content:
            raise bad_request("'input' must not be empty", "input")
    elif not isinstance(content, list) or not content:
        raise bad_request("'input' is required: a string or a non-empty array of items", "input")
    elif not all(isinstance(item, dict | str) for item in content):
        raise bad_request("'input' items must be objects or strings", "input")
    else:
        for i, item in enumerate(content):
            if _is_reference(item) and not isinstance(item.get("id"), str):
                raise bad_request(f"input[{i}]: an item_reference needs a string 'id'", "input")
    _optional_bool(body, "stream")
    _optional_bool(body, "store")
    _optional_str(body, "previous_response_id")
    _optional_str(body, "instructions")
    conversation = body.get("conversation")
    if conversation is not None and not (
        isinstance(conversation, str)
        or (isinstance(conversation, dict) and isinstance(conversation.get("id"), str))
    ):
        raise bad_request(
            "'conversation' must be a conversation id or an object with a string 'id'",
            "conversation",
        )
    return body


def _is_reference(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "item_reference"


def has_image_content(messages: list[dict[str, Any]]) -> bool:
    """Whether any message carries an `image_url` content part."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    return True
    return False


def check_model(body: dict[str, Any]) -> None:
    """A `model`, where a body has one, is a model name (whatever the route's validator)."""
    if body.get("model") is not None:
        _require_model(body)


def _require_model(body: dict[str, Any]) -> None:
    _require_str(body, "model")
    model = body["model"]
    if model == "-" or not _MODEL_NAME.fullmatch(model):
        raise bad_request(
            f"'model' must be a model name: 1 to {MAX_MODEL_CHARS} characters of "
            "A-Z a-z 0-9 . _ : / -",
            "model",
        )


def _require_str(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"'{name}' is required and must be a non-empty string", name)


def _optional_str(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None:
        _str(name, value)


def _optional_bool(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None:
        _bool(name, value)


def _optional_int(
    body: dict[str, Any], name: str, minimum: int | None, maximum: int | None = None
) -> None:
    value = body.get(name)
    if value is not None:
        _int(name, value, minimum, maximum)


# Checks of one field's value (not None); each raises ApiError(400) naming the field.


def _str(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string", name)


def _bool(name: str, value: Any, param: str | None = None) -> None:
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false", param or name)


def _int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer", name)
    if minimum is not None and value < minimum:
        raise bad_request(f"'{name}' must be an integer >= {minimum}", name)
    if maximum is not None and value > maximum:
        raise bad_request(f"'{name}' must be an integer <= {maximum}", name)


def _positive_int(name: str, value: Any) -> None:
    _int(name, value, 1)


def _non_negative_int(name: str, value: Any) -> None:
    _int(name, value, 0)


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{name}' must be a number", name)


def _objects(name: str, value: Any) -> None:
    if not (isinstance(value, list) and all(isinstance(item, dict) for item in value)):
        raise bad_request(f"'{name}' must be an array of objects", name)


def _object(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise bad_request(f"'{name}' must be an object", name)


def _stream_options(name: str, value: Any) -> None:
    _object(name, value)
    include = value.get("include_usage")
    if include is not None:
        _bool("include_usage", include, param=name)


def _stop(name: str, value: Any) -> None:
    if not isinstance(value, str) and not (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    ):
        raise bad_request(f"'{name}' must be a string or an array of strings", name)


def _tool_choice(name: str, value: Any) -> None:
    if not isinstance(value, str | dict):
        raise bad_request(f"'{name}' must be a string or an object", name)


# Chat Completions' optional fields that the gateway or the upstream reads, and their checks.
_CHAT_FIELDS: dict[str, Callable[[str, Any], None]] = {
    "stream": _bool,
    "stream_options": _stream_options,
    "max_tokens": _positive_int,
    "max_completion_tokens": _positive_int,
    "n": _positive_int,
    "top_logprobs": _non_negative_int,
    "seed": _int,
    "temperature": _number,
    "top_p": _number,
    "presence_penalty": _number,
    "frequency_penalty": _number,
    "logprobs": _bool,
    "parallel_tool_calls": _bool,
    "user": _str,
    "stop": _stop,
    "tools": _objects,
    "tool_choice": _tool_choice,
    "response_format": _object,
}
