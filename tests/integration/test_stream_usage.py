"""Usage in chat streams the OpenAI way, through a real gateway on the simulator (which speaks
xAI: the running usage on every chunk): clients that add usage up over chunks count the real
tokens, and the OpenAI SDK and LangChain see usage only when they ask for it."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from tests.support.keyfiles import MAIN_SECRET, MODEL

MESSAGES = [{"role": "user", "content": "Write a short story about a space adventure"}]
CHUNKS = 21


def chunks_of(url: str, key: str, **body) -> list[dict]:
    """The chunks of one stream, on a conversation of its own: the simulator's prompt cache
    (cache affinity) would otherwise bill a repeated prompt as cached input."""
    payload = {"model": MODEL, "messages": MESSAGES, "stream": True, "sim": {"chunks": CHUNKS}}
    payload.update(body)
    response = httpx.post(
        f"{url}/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {key}", "x-grok-conv-id": str(uuid.uuid4())},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    events = response.content.split(b"\n\n")
    assert events[-2] == b"data: [DONE]"
    return [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]


@pytest.fixture(scope="module")
def real_usage(simulator) -> dict:
    """What the upstream itself reports for the request: the last running total."""
    chunks = chunks_of(f"{simulator.url}/v1", "xai-test", stream_options={"include_usage": True})
    assert all("usage" in c for c in chunks)  # xAI's shape: usage on every chunk
    return chunks[-1]["usage"]


def test_a_summing_client_counts_the_real_total(gateway, real_usage):
    chunks = chunks_of(f"{gateway.url}/api/v1", MAIN_SECRET, stream_options={"include_usage": True})
    summed = {
        kind: sum(c["usage"][kind] for c in chunks if c.get("usage"))
        for kind in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    assert summed == {k: real_usage[k] for k in summed}


def test_only_the_final_chunk_carries_usage_and_it_has_no_choices(gateway, real_usage):
    chunks = chunks_of(f"{gateway.url}/api/v1", MAIN_SECRET, stream_options={"include_usage": True})
    assert [i for i, c in enumerate(chunks) if "usage" in c] == [len(chunks) - 1]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == real_usage


def test_no_chunk_carries_usage_when_the_client_did_not_ask(gateway):
    chunks = chunks_of(f"{gateway.url}/api/v1", MAIN_SECRET)
    assert len(chunks) == CHUNKS
    assert not any("usage" in c for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" and c["choices"] for c in chunks)


def sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=MAIN_SECRET, base_url=f"{gateway.url}/api/v1", max_retries=0)


def test_the_openai_sdk_with_include_usage_gets_the_real_total_once(gateway, real_usage):
    stream = sdk(gateway).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"sim": {"chunks": CHUNKS}},
    )
    chunks = list(stream)
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and chunks[-1].choices == []
    assert usages[0].total_tokens == real_usage["total_tokens"]
    assert usages[0].completion_tokens == real_usage["completion_tokens"]


def test_the_openai_sdk_without_include_usage_sees_no_usage(gateway):
    stream = sdk(gateway).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, extra_body={"sim": {"chunks": CHUNKS}}
    )
    chunks = list(stream)
    assert len(chunks) == CHUNKS and all(c.usage is None for c in chunks)
    # The seed document's loop indexes choices[0] on every chunk.
    assert "".join(c.choices[0].delta.content or "" for c in chunks)


def test_langchain_streaming_reports_the_real_token_count(gateway, real_usage):
    llm = ChatOpenAI(
        model=MODEL,
        api_key=MAIN_SECRET,
        base_url=f"{gateway.url}/api/v1",
        stream_usage=True,
        max_retries=0,
        extra_body={"sim": {"chunks": CHUNKS}},
    )
    total = None
    for chunk in llm.stream(MESSAGES[0]["content"]):
        total = chunk if total is None else total + chunk  # LangChain adds usage up
    assert total is not None and total.usage_metadata is not None
    assert total.usage_metadata["total_tokens"] == real_usage["total_tokens"]
    assert total.usage_metadata["output_tokens"] == real_usage["completion_tokens"]
