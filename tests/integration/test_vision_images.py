"""Vision stream fallback (both paths, both modes), images, and the model list."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.support.keyfiles import MAIN_SECRET, MODEL, MODELS_SECRET, key_entry, keys_toml
from tests.support.processes import gateway_env, start_gateway

AUTH = {"Authorization": f"Bearer {MAIN_SECRET}"}
IMAGE = "https://example.com/cat.png"
IMAGE_MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": IMAGE}},
            {"type": "text", "text": "What is this?"},
        ],
    }
]


@pytest.fixture(scope="module")
def sse_fallback_gateway(simulator, tmp_path_factory):
    keys = tmp_path_factory.mktemp("sse") / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    proc = start_gateway(gateway_env(simulator, str(keys), VISION_STREAM_FALLBACK="sse"))
    yield proc
    proc.stop()


def test_vision_endpoint_asked_to_stream_answers_whole_with_the_fallback_header(gateway, sim_reset):
    response = httpx.post(
        f"{gateway.url}/api/v1/vision/analyze",
        json={"image_url": IMAGE, "prompt": "What is this?", "stream": True},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.headers["x-stream-fallback"] == "true"
    assert response.headers["content-type"] == "application/json"
    assert response.json()["object"] == "chat.completion"
    upstream = httpx.get(f"{sim_reset.url}/sim/stats").json()["last_request"]["body"]
    assert "stream" not in upstream or upstream["stream"] is False
    assert upstream["messages"][0]["content"][0]["image_url"]["url"] == IMAGE


def test_vision_endpoint_without_stream_has_no_fallback_header(gateway):
    response = httpx.post(
        f"{gateway.url}/api/v1/vision/analyze",
        json={"image_url": IMAGE, "prompt": "What is this?", "detail": "high"},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert "x-stream-fallback" not in response.headers
    assert response.json()["choices"][0]["message"]["content"]


def test_vision_endpoint_rejects_a_missing_image(gateway):
    response = httpx.post(
        f"{gateway.url}/api/v1/vision/analyze", json={"prompt": "x"}, headers=AUTH
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image_url"


def test_chat_with_image_content_asked_to_stream_falls_back_to_json(gateway, sim_reset):
    response = httpx.post(
        f"{gateway.url}/api/v1/chat/completions",
        json={"model": MODEL, "messages": IMAGE_MESSAGES, "stream": True},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.headers["x-stream-fallback"] == "true"
    assert response.json()["choices"][0]["message"]["content"]
    upstream = httpx.get(f"{sim_reset.url}/sim/stats").json()["last_request"]["body"]
    assert upstream.get("stream") is not True


def test_sdk_reads_the_fallback_header_through_with_raw_response(gateway):
    client = openai.OpenAI(api_key=MAIN_SECRET, base_url=f"{gateway.url}/api/v1")
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=IMAGE_MESSAGES, stream=True
    )
    assert raw.headers["x-stream-fallback"] == "true"


def test_sse_fallback_sends_one_chunk_then_done(sse_fallback_gateway):
    response = httpx.post(
        f"{sse_fallback_gateway.url}/api/v1/vision/analyze",
        json={"image_url": IMAGE, "stream": True},
        headers=AUTH,
    )
    assert response.headers["x-stream-fallback"] == "true"
    assert response.headers["content-type"].startswith("text/event-stream")
    parts = response.text.split("\n\n")
    assert parts[1:] == ["data: [DONE]", ""]
    chunk = json.loads(parts[0][6:])
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"]["content"]


def test_sdk_streams_the_sse_fallback_as_one_chunk(sse_fallback_gateway):
    client = openai.OpenAI(api_key=MAIN_SECRET, base_url=f"{sse_fallback_gateway.url}/api/v1")
    stream = client.chat.completions.create(model=MODEL, messages=IMAGE_MESSAGES, stream=True)
    contents = [c.choices[0].delta.content for c in stream]
    assert len(contents) == 1
    assert contents[0]


def test_images_through_the_sdk(gateway):
    client = openai.OpenAI(api_key=MAIN_SECRET, base_url=f"{gateway.url}/api/v1")
    result = client.images.generate(model="grok-2-image-1212", prompt="a red fox", n=2)
    assert len(result.data) == 2
    assert result.data[0].url


def test_images_generate_with_stream_drops_it_upstream_and_says_so(gateway, sim_reset):
    response = httpx.post(
        f"{gateway.url}/api/v1/images/generate",
        json={"prompt": "a red fox", "stream": True},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.headers["x-stream-fallback"] == "true"
    upstream = httpx.get(f"{sim_reset.url}/sim/stats").json()["last_request"]["body"]
    assert "stream" not in upstream
    assert upstream["model"] == "grok-imagine-image"  # DEFAULT_IMAGE_MODEL


def test_images_without_a_prompt_is_400(gateway):
    response = httpx.post(f"{gateway.url}/api/v1/images/generate", json={}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"


def test_models_lists_the_upstream_models(gateway):
    client = openai.OpenAI(api_key=MAIN_SECRET, base_url=f"{gateway.url}/api/v1")
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids


def test_models_list_is_filtered_by_the_key_allow_list(gateway):
    client = openai.OpenAI(api_key=MODELS_SECRET, base_url=f"{gateway.url}/api/v1")
    assert [m.id for m in client.models.list()] == [MODEL]


def test_model_outside_the_allow_list_is_403(gateway):
    client = openai.OpenAI(api_key=MODELS_SECRET, base_url=f"{gateway.url}/api/v1")
    with pytest.raises(openai.PermissionDeniedError) as raised:
        client.chat.completions.create(
            model="grok-4-1-fast-reasoning", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.code == "model_not_allowed"
