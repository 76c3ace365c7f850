"""xAI's stream shapes through a real gateway: usage the OpenAI way (or bytes untouched in
passthrough mode), usage charged once, cost logged, Responses events, and model names the
upstream has changed (aliases, defaults)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from service.app import create_app
from service.registry.keys import RegistryError, parse_registry
from service.registry.models import ModelCatalog
from service.settings import Settings
from service.sse import ResponsesDialect, StreamSet, relay_sse
from service.upstream.call import EVENT_STREAM, UpstreamPolicy, open_upstream
from service.upstream.client import Upstream
from service.usage.record import TICKS_PER_USD
from tests.support.hostile_upstream import (
    PROMPT_TOKENS,
    RESPONSE_ID,
    TICKS_PER_TOKEN,
    openai_events,
    responses_events,
    start_hostile_upstream,
    xai_events,
)
from tests.support.keyfiles import MAIN_SECRET, key_entry, keys_toml
from tests.support.processes import gateway_env, start_gateway

MESSAGES = [{"role": "user", "content": "Write a short story about a space adventure"}]
AUTH = {"Authorization": f"Bearer {MAIN_SECRET}"}
TOKEN_BUDGET = 1_000_000


@pytest.fixture(scope="module")
def hostile():
    proc = start_hostile_upstream()
    yield proc
    proc.stop()


def start_relay_gateway(hostile, tmp_path_factory, **env: str):
    """A gateway on the hostile upstream; the key has a token budget to watch charges."""
    keys = tmp_path_factory.mktemp("relay") / "keys.toml"
    budget = f'requests = "100000/hour"\ntokens = "{TOKEN_BUDGET}/hour"'
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET), defaults=budget))
    env = {
        "XAI_API_KEY": "xai-test-upstream-key",
        "XAI_BASE_URL": f"{hostile.url}/v1",
        "GATEWAY_KEYS_FILE": str(keys),
        "GATEWAY_DRAIN_DELAY_SECONDS": "0",
        **env,
    }
    return start_gateway(env)


@pytest.fixture(scope="module")
def gateway(hostile, tmp_path_factory):
    """Usage the OpenAI way (the default)."""
    proc = start_relay_gateway(hostile, tmp_path_factory)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def passthrough(hostile, tmp_path_factory):
    """GATEWAY_STREAM_USAGE=passthrough: xAI's chunks byte for byte."""
    proc = start_relay_gateway(hostile, tmp_path_factory, GATEWAY_STREAM_USAGE="passthrough")
    yield proc
    proc.stop()


def stream(gateway, hostile: dict, request_id: str | None = None, **body) -> httpx.Response:
    headers = {**AUTH, "X-Request-ID": request_id} if request_id else AUTH
    payload = {
        "model": "grok-4.3",
        "messages": MESSAGES,
        "stream": True,
        "hostile": hostile,
        **body,
    }
    return httpx.post(
        f"{gateway.url}/api/v1/chat/completions", json=payload, headers=headers, timeout=30
    )


def access_line(gateway, request_id: str) -> dict:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for line in gateway.read_output().splitlines():
            if request_id in line and '"logger":"access"' in line:
                return json.loads(line)
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}")


def without_usage_chunk(events: list[bytes]) -> bytes:
    return b"".join(e for e in events if b'"choices":[]' not in e.replace(b" ", b""))


def openai_way(events: list[bytes], usage_chunk: bool = False) -> bytes:
    """xAI's events as OpenAI's contract has them: no `usage` on content chunks (the rest of
    each chunk as it was), the trailing usage-only chunk only if `usage_chunk`."""
    out = []
    for event in events:
        if b'"choices":[]' in event.replace(b" ", b""):
            out += [event] if usage_chunk else []
        elif event.startswith(b"data: {"):
            doc = json.loads(event[6:])
            doc.pop("usage", None)
            out.append(b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n")
        else:
            out.append(event)
    return b"".join(out)


# --- bytes, the OpenAI way (the default) ------------------------------------------------------


def test_content_chunks_lose_their_usage_and_keep_every_other_byte(gateway):
    response = stream(gateway, {"case": "xai", "chunks": 8, "delay_ms": 5})
    assert response.status_code == 200
    assert response.content == openai_way(xai_events(8))


def test_a_client_that_asked_gets_the_upstreams_usage_only_chunk_last(gateway):
    response = stream(gateway, {"case": "xai", "chunks": 8}, stream_options={"include_usage": True})
    assert response.content == openai_way(xai_events(8), usage_chunk=True)


def test_the_usage_only_chunk_is_recognised_in_any_json_spacing(gateway):
    response = stream(gateway, {"case": "xai", "chunks": 3, "spaced": True})
    events = xai_events(3, spaced=True)
    assert b'"choices" :  [ ]' in events[-2]
    assert response.content == openai_way(events)


def test_a_usage_only_chunk_is_made_when_the_upstream_sent_none_and_the_client_asked(gateway):
    body = {"case": "xai", "chunks": 4, "usage_chunk": False}
    response = stream(gateway, body, stream_options={"include_usage": True})
    events = response.content.split(b"\n\n")
    assert b"".join(e + b"\n\n" for e in events[:-3]) == openai_way(xai_events(4, False)[:-1])
    last = json.loads(events[-3][6:])
    assert last["choices"] == [] and last["usage"]["total_tokens"] == PROMPT_TOKENS + 4


@pytest.mark.parametrize("line_end", ["crlf", "cr"])
def test_events_with_crlf_or_cr_line_ends_are_relayed_as_lf_events(gateway, line_end):
    # 5-byte writes: a CR and its LF arrive in separate reads.
    response = stream(gateway, {"case": "xai", "chunks": 4, "line_end": line_end, "piece": 5})
    assert response.content == openai_way(xai_events(4))


# --- bytes, GATEWAY_STREAM_USAGE=passthrough ---------------------------------------------------


def test_passthrough_relays_xai_chunks_to_a_client_that_asked_for_usage_byte_for_byte(
    passthrough,
):
    body = {"case": "xai", "chunks": 8}
    response = stream(passthrough, body, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.content == b"".join(xai_events(8))


def test_passthrough_drops_only_the_usage_chunk_the_gateway_asked_for(passthrough):
    response = stream(passthrough, {"case": "xai", "chunks": 8, "delay_ms": 5})
    events = xai_events(8)
    assert response.content == without_usage_chunk(events)
    assert response.content.count(b'"usage":{') == 8  # every content chunk keeps its usage


def test_passthrough_relays_a_stream_without_a_trailing_usage_chunk_whole(passthrough):
    response = stream(passthrough, {"case": "xai", "chunks": 4, "usage_chunk": False})
    assert response.content == b"".join(xai_events(4, usage_chunk=False))


def test_the_seed_loop_reads_an_xai_stream_through_the_sdk(gateway):
    client = openai.OpenAI(api_key=MAIN_SECRET, base_url=f"{gateway.url}/api/v1", max_retries=0)
    chunks = client.chat.completions.create(
        model="grok-4.3",
        messages=MESSAGES,
        stream=True,
        extra_body={"hostile": {"case": "xai", "chunks": 6}},
    )
    # The seed document's loop indexes choices[0]: no usage-only chunk may reach it.
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "".join(f"word{i} " for i in range(6))


# --- charging ------------------------------------------------------------------------------


def test_tokens_are_charged_once_from_the_last_running_total(gateway):
    before = stream(gateway, {"case": "xai", "chunks": 1})
    remaining = int(before.headers["x-ratelimit-remaining-tokens"]) - (PROMPT_TOKENS + 1)
    stream(gateway, {"case": "xai", "chunks": 20}, request_id="charge-once-1")
    after = stream(gateway, {"case": "xai", "chunks": 1})
    # 20 chunks each carrying a running total: charged 12 + 20, not the sum of 20 totals.
    assert access_line(gateway, "charge-once-1")["tokens"] == PROMPT_TOKENS + 20
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == remaining - (PROMPT_TOKENS + 20)


def test_the_upstream_cost_of_a_stream_is_in_the_access_log(gateway):
    stream(gateway, {"case": "xai", "chunks": 7}, request_id="stream-cost-1")
    line = access_line(gateway, "stream-cost-1")
    ticks = (PROMPT_TOKENS + 7) * TICKS_PER_TOKEN
    assert line["cost_usd"] == pytest.approx(ticks / TICKS_PER_USD)
    assert "cost_unknown" not in line and "tokens_estimated" not in line


def test_an_openai_shaped_stream_is_charged_from_its_trailing_usage_chunk(gateway):
    response = stream(gateway, {"case": "openai", "chunks": 5}, request_id="openai-shape-1")
    assert response.content == openai_way(openai_events(5))
    line = access_line(gateway, "openai-shape-1")
    assert line["tokens"] == 7 + 5 and line.get("cost_unknown") is True


def test_a_malformed_last_usage_is_charged_as_an_estimate_and_the_stream_ends_clean(gateway):
    response = stream(gateway, {"case": "bad_usage"}, request_id="bad-usage-1")
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in response.content
    assert access_line(gateway, "bad-usage-1").get("tokens_estimated") is True


# --- the Responses dialect (the route that uses it is built elsewhere) ----------------------


async def relay_responses(hostile_url: str, options: dict) -> tuple[bytes, object]:
    """Open a real upstream stream and relay it with ResponsesDialect into a byte buffer."""
    settings = Settings(xai_base_url=f"{hostile_url}/v1", xai_api_key="xai-test")
    upstream = Upstream(settings)
    streams = StreamSet(keepalive_seconds=15)
    sent: list[bytes] = []
    never = asyncio.Event()

    async def receive() -> dict:
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message.get("body", b""))

    try:
        body = json.dumps({"model": "grok-4.3", "input": "hi", "hostile": options}).encode()
        policy = UpstreamPolicy(first_byte_timeout=5, retries=0)
        response = await open_upstream(
            upstream, "POST", "responses", policy, body, accept=EVENT_STREAM
        )
        result = await relay_sse(
            response,
            receive,
            send,
            streams,
            ResponsesDialect(),
            idle_timeout=5,
            max_event_bytes=1 << 20,
        )
    finally:
        await upstream.aclose()
    return b"".join(sent), result


async def test_responses_events_are_relayed_untouched_with_their_usage_and_id(hostile):
    sent, result = await relay_responses(hostile.url, {"case": "responses", "chunks": 5})
    assert sent == b"".join(responses_events(5))
    assert result.completed and result.response_id == RESPONSE_ID
    assert result.usage.total_tokens == 9 + 5 + 3 and result.usage.cost_ticks == 777_000


async def test_a_responses_stream_dropped_mid_way_ends_with_the_responses_error_event(hostile):
    sent, result = await relay_responses(hostile.url, {"case": "responses", "fail_after": 3})
    events = responses_events(4)
    assert sent.startswith(b"".join(events[:3]))
    tail = sent[len(b"".join(events[:3])) :]
    assert tail.startswith(b"event: error\ndata: ")
    error = json.loads(tail.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["code"] == "upstream_error"
    assert error["message"].startswith("API error: ") and error["param"] is None
    assert not result.completed and result.response_id == RESPONSE_ID


# --- model names -------------------------------------------------------------------------

ALIASES = {
    "grok-4-1-fast-non-reasoning": "grok-4.3",
    "grok-2-image-1212": "grok-imagine-image",
    "grok-4-fast": "grok-4-1-fast-reasoning",
}
IMAGE_MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "text", "text": "What is this?"},
        ],
    }
]
ROUTES = {
    "chat-stream": (
        "/api/v1/chat/completions",
        {"model": "grok-4-1-fast-non-reasoning", "messages": MESSAGES, "stream": True},
        "grok-4.3",
    ),
    "chat": (
        "/api/v1/chat/completions",
        {"model": "grok-4-1-fast-non-reasoning", "messages": MESSAGES},
        "grok-4.3",
    ),
    "vision-fallback": (
        "/api/v1/chat/completions",
        {"model": "grok-4-1-fast-non-reasoning", "messages": IMAGE_MESSAGES, "stream": True},
        "grok-4.3",
    ),
    "vision": (
        "/api/v1/vision/analyze",
        {"model": "grok-4-1-fast-non-reasoning", "image_url": "https://example.com/a.png"},
        "grok-4.3",
    ),
    "images": (
        "/api/v1/images/generations",
        {"model": "grok-2-image-1212", "prompt": "a fox"},
        "grok-imagine-image",
    ),
}


@contextlib.asynccontextmanager
async def in_process_gateway(
    simulator, allowed: list[str]
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The app in this process (its key file's aliases set as ALIASES) on the simulator:
    (a client of the gateway, a client of the simulator, whose stats were just reset)."""
    registry = parse_registry(
        keys_toml(key_entry("main", MAIN_SECRET, extra=f"models = {json.dumps(allowed)}")).encode()
    )
    registry.models = ModelCatalog(aliases=ALIASES)  # what [models.aliases] parses into
    app = create_app(Settings(xai_base_url=f"{simulator.url}/v1", xai_api_key="xai-test"), registry)
    router = app.router  # type: ignore[attr-defined]
    async with (
        router.lifespan_context(router),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client,
        httpx.AsyncClient(base_url=simulator.url) as sim,
    ):
        status = app.services.upstream_status  # type: ignore[attr-defined]
        for _ in range(300):  # its GET /v1/api-key must not be the last request seen
            if status.state != "checking":
                break
            await asyncio.sleep(0.01)
        await sim.post("/sim/reset")
        yield client, sim


@pytest.mark.parametrize("route", list(ROUTES))
async def test_an_alias_rewrites_the_upstream_model_and_the_log_keeps_the_clients(
    route, simulator, caplog
):
    path, body, upstream_model = ROUTES[route]
    caplog.set_level(logging.INFO, logger="service.access")
    async with in_process_gateway(simulator, allowed=[body["model"]]) as (client, sim):
        response = await client.post(path, json=body, headers=AUTH)
        seen = (await sim.get("/sim/stats")).json()["last_request"]["body"]
    assert response.status_code == 200  # the allow-list names the client's model
    assert seen["model"] == upstream_model
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert logged[-1]["model"] == body["model"]


async def test_the_model_list_shows_the_aliases_a_key_may_send(simulator):
    async with in_process_gateway(simulator, allowed=["grok-4-fast"]) as (client, _):
        response = await client.get("/api/v1/models", headers=AUTH)
    listed = response.json()["data"]
    assert [m["id"] for m in listed] == ["grok-4-fast"]  # an alias of grok-4-1-fast-reasoning
    assert listed[0]["owned_by"] == "xai"


ALIAS_TABLE = '[models.aliases]\n"grok-4-1-fast-non-reasoning" = "grok-4.3"\n'


def key_file_aliases() -> bool:
    """Whether the key file's `[models.aliases]` is parsed (it lands with the money branch)."""
    try:
        registry = parse_registry((keys_toml() + ALIAS_TABLE).encode())
    except RegistryError:
        return False
    return registry.models.upstream_name("grok-4-1-fast-non-reasoning") == "grok-4.3"


@pytest.mark.skipif(not key_file_aliases(), reason="key file without [models.aliases] parsing")
def test_a_key_file_alias_rewrites_the_model_a_real_gateway_sends_upstream(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)) + ALIAS_TABLE)
    gw = start_gateway(gateway_env(simulator, str(keys)))
    try:
        while httpx.get(f"{gw.url}/readyz").json()["upstream"] == "checking":
            time.sleep(0.02)  # its GET /v1/api-key must not be the last request seen
        body = {"model": "grok-4-1-fast-non-reasoning", "messages": MESSAGES, "stream": True}
        headers = {**AUTH, "X-Request-ID": "alias-1"}
        response = httpx.post(f"{gw.url}/api/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200
        seen = httpx.get(f"{simulator.url}/sim/stats").json()["last_request"]["body"]
        assert seen["model"] == "grok-4.3"
        assert access_line(gw, "alias-1")["model"] == "grok-4-1-fast-non-reasoning"
    finally:
        gw.stop()


def test_vision_and_image_requests_without_a_model_use_the_configured_defaults(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    env = gateway_env(
        simulator,
        str(keys),
        DEFAULT_VISION_MODEL="grok-vision-of-the-day",
        DEFAULT_IMAGE_MODEL="grok-imagine-of-the-day",
    )
    gw = start_gateway(env)
    try:
        while httpx.get(f"{gw.url}/readyz").json()["upstream"] == "checking":
            time.sleep(0.02)  # its GET /v1/api-key must not be the last request seen
        seen = []
        for path, body in (
            ("/api/v1/vision/analyze", {"image_url": "https://example.com/a.png"}),
            ("/api/v1/images/generations", {"prompt": "a fox"}),
        ):
            assert httpx.post(f"{gw.url}{path}", json=body, headers=AUTH).status_code == 200
            stats = httpx.get(f"{simulator.url}/sim/stats").json()
            seen.append(stats["last_request"]["body"]["model"])
    finally:
        gw.stop()
    assert seen == ["grok-vision-of-the-day", "grok-imagine-of-the-day"]
