"""Fast unit tests of the pure pieces: the SSE fallback chunk, body validation, upstream errors."""

from __future__ import annotations

import json

import pytest

from service.http import validation
from service.http.errors import ApiError
from service.sse import completion_as_chunk
from service.upstream.errors import normalise_upstream_error, upstream_message


def test_completion_as_one_chunk_event_then_done():
    completion = {
        "id": "c1",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"total_tokens": 3},
    }
    events = completion_as_chunk(completion, client_wants_usage=True).split(b"\n\n")
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["content"] == "hello"
    assert json.loads(events[1][6:])["usage"] == {"total_tokens": 3}
    assert events[2:] == [b"data: [DONE]", b""]


# --- validation -------------------------------------------------------------------------


def test_image_content_is_detected_in_any_message():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]},
    ]
    assert validation.has_image_content(messages)
    assert not validation.has_image_content([{"role": "user", "content": "text only"}])


def test_vision_body_gets_the_default_model():
    body = validation.vision_analysis({"image_url": "data:image/png;base64,AA"}, "vm")
    assert body["model"] == "vm"


@pytest.mark.parametrize(
    "body",
    [
        {"image_url": "ftp://x"},
        {"image_url": "https://x", "prompt": 5},
        {"image_url": "https://x", "detail": "max"},
    ],
)
def test_bad_vision_bodies_are_400(body):
    with pytest.raises(ApiError) as raised:
        validation.vision_analysis(body, "vm")
    assert raised.value.status == 400


def test_image_n_is_bounded():
    with pytest.raises(ApiError):
        validation.image_generation({"prompt": "x", "n": 11}, "im")


# --- upstream errors --------------------------------------------------------------------


def test_xai_error_shape_is_rewritten_to_openai_shape_keeping_the_message():
    body = b'{"code": "Client specified an invalid argument", "error": "max_tokens too big"}'
    error = normalise_upstream_error(400, body)
    assert (error.status, error.code, error.message) == (
        400,
        "invalid_request_error",
        "max_tokens too big",
    )


def test_openai_error_shape_and_plain_text_are_understood():
    assert upstream_message(b'{"error": {"message": "nope"}}') == "nope"
    assert upstream_message(b"Bad Gateway") == "Bad Gateway"


def test_xai_wrong_key_400_becomes_502_without_the_key_prefix():
    body = b'{"code": "x", "error": "Incorrect API key provided: xa***yz. See console.x.ai."}'
    error = normalise_upstream_error(400, body)
    assert error.status == 502 and error.code == "upstream_auth_failed"
    assert "xa***" not in error.message


def test_upstream_429_keeps_retry_after_in_whole_seconds():
    error = normalise_upstream_error(429, b'{"error": "slow down"}', retry_after="2.5")
    assert error.status == 429 and dict(error.headers)[b"retry-after"] == b"2"
    assert normalise_upstream_error(429, b"", retry_after=None).headers == [(b"retry-after", b"1")]
