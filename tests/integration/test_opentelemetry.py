"""OpenTelemetry from a real gateway process to a real OTLP/HTTP receiver (SPEC section 12):
the SERVER span of each API request with its GenAI and gateway attributes, its upstream
CLIENT child, the caller's traceparent as parent, the GenAI metrics, and no prompt or
completion anywhere in what is exported. Without an endpoint no exporter is ever imported."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.keyfiles import MAIN_SECRET, MODEL, key_entry, keys_toml
from tests.support.otlp_receiver import OtlpReceiver, Span, start_otlp_receiver
from tests.support.processes import Proc, gateway_env, start_gateway

pytestmark = pytest.mark.slow

PROMPT = "tell me about the lighthouse keeper's secret recipe"
PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
AUTH = {"Authorization": f"Bearer {MAIN_SECRET}"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = start_otlp_receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced(simulator: Proc, receiver: OtlpReceiver, tmp_path_factory) -> Iterator[Proc]:
    keys = tmp_path_factory.mktemp("otel") / "keys.toml"
    keys.write_text(keys_toml(key_entry("otel-key", MAIN_SECRET, tenant="acme")))
    env = gateway_env(
        simulator,
        str(keys),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_METRIC_EXPORT_INTERVAL="200",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=test",
    )
    proc = start_gateway(env)
    yield proc
    proc.stop()


def chat(gw: Proc, request_id: str, stream: bool, **headers: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    return httpx.post(
        f"{gw.url}/api/v1/chat/completions",
        json=body,
        headers={**AUTH, "X-Request-ID": request_id, **headers},
        timeout=15,
    )


def server_span(receiver: OtlpReceiver, request_id: str) -> Span:
    def found(r: OtlpReceiver) -> Span | None:
        return next(
            (s for s in r.spans if s.attributes.get("gateway.request_id") == request_id), None
        )

    span = receiver.wait_for(found)
    assert span is not None, f"no span for request {request_id} arrived"
    return span


def children(receiver: OtlpReceiver, parent: Span) -> list[Span]:
    return receiver.wait_for(lambda r: _children(r, parent), timeout=5)


def _children(receiver: OtlpReceiver, parent: Span) -> list[Span]:
    return [s for s in receiver.spans if s.parent_span_id == parent.span_id]


def last_point(receiver: OtlpReceiver, metric: str, **attributes: str):
    """The newest data point of `metric` whose attributes include `attributes`."""

    def found(r: OtlpReceiver):
        points = [
            p for p in r.points if p.metric == metric and attributes.items() <= p.attributes.items()
        ]
        return points[-1] if points else None

    return receiver.wait_for(found)


def test_a_streamed_chat_has_one_server_span_with_the_genai_attributes(traced, receiver):
    response = chat(traced, "otel-stream-1", stream=True)
    assert response.status_code == 200
    first = json.loads(response.text.split("\n\n")[0].removeprefix("data: "))
    span = server_span(receiver, "otel-stream-1")
    access = _access_line(traced, "otel-stream-1")
    assert span.kind == "SERVER"
    assert span.name == f"chat {MODEL}"
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "x_ai"
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["gen_ai.response.model"] == first["model"]
    assert attributes["gen_ai.response.id"] == first["id"]
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert (
        attributes["gen_ai.usage.input_tokens"] + attributes["gen_ai.usage.output_tokens"]
        == access["tokens"]
    )
    assert attributes["http.response.status_code"] == 200
    assert attributes["gateway.tenant"] == "acme"
    assert attributes["gateway.key_id"] == "otel-key"
    assert attributes["gateway.cost_usd"] == pytest.approx(access["cost_usd"])
    assert "gateway.refusal_reason" not in attributes
    assert attributes["gateway.upstream"] == "default"  # the pool member that answered
    assert span.resource["service.name"] == "grok-gateway"
    assert span.resource["deployment.environment.name"] == "test"
    assert span.resource["service.version"] and span.resource["service.instance.id"]


def test_the_upstream_call_is_a_client_child_span(traced, receiver, simulator):
    assert chat(traced, "otel-child-1", stream=True).status_code == 200
    parent = server_span(receiver, "otel-child-1")
    (child,) = children(receiver, parent)
    assert child.kind == "CLIENT"
    assert child.trace_id == parent.trace_id
    assert child.name == f"chat {MODEL}"
    assert child.attributes["http.request.method"] == "POST"
    assert child.attributes["http.response.status_code"] == 200
    assert child.attributes["url.full"] == f"{simulator.url}/v1/chat/completions"
    assert child.attributes["server.address"] == "127.0.0.1"
    assert child.attributes["server.port"] == simulator.port
    assert child.attributes["gen_ai.provider.name"] == "x_ai"
    assert parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns


def test_each_upstream_attempt_is_its_own_client_span(traced, receiver):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "sim": {"fault": "status", "status": 503, "fault_times": 1, "key": "otel-retry-1"},
    }
    response = httpx.post(
        f"{traced.url}/api/v1/chat/completions",
        json=body,
        headers={**AUTH, "X-Request-ID": "otel-retry-1"},
        timeout=15,
    )
    assert response.status_code == 200  # retried once (UPSTREAM_RETRIES=1), then answered
    parent = server_span(receiver, "otel-retry-1")
    attempts = sorted(
        receiver.wait_for(lambda r: len(_children(r, parent)) == 2 and _children(r, parent)),
        key=lambda span: span.start_ns,
    )
    assert [a.attributes["http.response.status_code"] for a in attempts] == [503, 200]
    assert attempts[0].attributes["error.type"] == "503"
    assert attempts[0].status_code == 2  # error
    assert "error.type" not in attempts[1].attributes
    assert attempts[0].end_ns <= attempts[1].start_ns
    assert parent.attributes["http.response.status_code"] == 200


def test_an_incoming_traceparent_becomes_the_parent(traced, receiver):
    traceparent = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
    assert chat(traced, "otel-parent-1", stream=False, traceparent=traceparent).status_code == 200
    span = server_span(receiver, "otel-parent-1")
    assert span.trace_id == PARENT_TRACE
    assert span.parent_span_id == PARENT_SPAN


def test_a_request_without_traceparent_starts_a_trace(traced, receiver):
    assert chat(traced, "otel-root-1", stream=False).status_code == 200
    span = server_span(receiver, "otel-root-1")
    assert span.parent_span_id == ""
    assert span.trace_id != PARENT_TRACE


def test_a_non_streaming_answer_names_its_id_and_model(traced, receiver):
    response = chat(traced, "otel-json-1", stream=False)
    span = server_span(receiver, "otel-json-1")
    assert span.attributes["gen_ai.response.id"] == response.json()["id"]
    assert span.attributes["gen_ai.response.model"] == response.json()["model"]
    assert (
        span.attributes["gen_ai.usage.output_tokens"]
        == (response.json()["usage"]["completion_tokens"])
    )


def test_a_refused_request_names_its_reason_and_calls_no_upstream(traced, receiver):
    response = httpx.post(
        f"{traced.url}/api/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]},
        headers={"Authorization": "Bearer gk-not-a-key", "X-Request-ID": "otel-refused-1"},
    )
    assert response.status_code == 401
    span = server_span(receiver, "otel-refused-1")
    assert span.attributes["http.response.status_code"] == 401
    assert span.attributes["gateway.refusal_reason"] == "invalid_api_key"
    assert span.attributes["error.type"] == "invalid_api_key"
    assert "gateway.key_id" not in span.attributes
    assert children(receiver, span) == []


def test_a_streamed_responses_api_call_is_chat_with_the_created_response_id(traced, receiver):
    response = httpx.post(
        f"{traced.url}/api/v1/responses",
        json={"model": MODEL, "input": PROMPT, "stream": True},
        headers={**AUTH, "X-Request-ID": "otel-responses-1"},
        timeout=15,
    )
    assert response.status_code == 200
    created = next(
        json.loads(event.split("data: ", 1)[1])
        for event in response.text.split("\n\n")
        if event.startswith("event: response.created")
    )["response"]
    span = server_span(receiver, "otel-responses-1")
    assert span.name == f"chat {MODEL}"
    assert span.attributes["gen_ai.response.id"] == created["id"]
    assert span.attributes["gen_ai.response.model"] == created["model"]
    assert span.attributes["gen_ai.usage.output_tokens"] > 0


def test_an_image_request_is_generate_content(traced, receiver):
    response = httpx.post(
        f"{traced.url}/api/v1/images/generations",
        json={"prompt": PROMPT},
        headers={**AUTH, "X-Request-ID": "otel-image-1"},
        timeout=15,
    )
    assert response.status_code == 200
    span = server_span(receiver, "otel-image-1")
    assert span.attributes["gen_ai.operation.name"] == "generate_content"
    assert span.name.startswith("generate_content ")


def test_a_request_that_generates_nothing_gets_an_http_span(traced, receiver):
    assert (
        httpx.get(
            f"{traced.url}/api/v1/models", headers={**AUTH, "X-Request-ID": "otel-models-1"}
        ).status_code
        == 200
    )
    span = server_span(receiver, "otel-models-1")
    assert span.name == "GET /api/v1/models"
    assert "gen_ai.operation.name" not in span.attributes
    (child,) = children(receiver, span)
    assert child.name == "GET"


def test_the_genai_metrics_arrive_with_their_attributes(traced, receiver):
    assert chat(traced, "otel-metrics-1", stream=True).status_code == 200
    model = {"gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL}
    duration = last_point(receiver, "gen_ai.server.request.duration", **model)
    assert duration is not None and duration.unit == "s" and duration.count >= 1
    assert duration.attributes["gen_ai.provider.name"] == "x_ai"
    assert duration.bounds[:3] == [0.01, 0.02, 0.04]  # the conventions' advised buckets
    ttft = last_point(receiver, "gen_ai.server.time_to_first_token", **model)
    assert ttft is not None and ttft.count >= 1 and 0 < ttft.sum <= duration.sum
    usage = "gen_ai.client.token.usage"
    tokens_in = last_point(receiver, usage, **model, **{"gen_ai.token.type": "input"})
    tokens_out = last_point(receiver, usage, **model, **{"gen_ai.token.type": "output"})
    assert tokens_in is not None and tokens_in.unit == "{token}" and tokens_in.sum > 0
    assert tokens_out is not None and tokens_out.sum > 0


def test_no_prompt_completion_or_key_is_ever_exported(traced, receiver):
    answer = chat(traced, "otel-private-1", stream=False).json()
    completion = answer["choices"][0]["message"]["content"]
    server_span(receiver, "otel-private-1")
    with receiver.lock:
        exported = b"".join(receiver.bodies)
    assert receiver.bodies
    for secret in (PROMPT, completion, MAIN_SECRET, "xai-test-upstream-key", "lighthouse"):
        assert secret.encode() not in exported


def test_without_an_endpoint_no_exporter_or_tracer_is_imported(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("plain", MAIN_SECRET)))
    # Python names every module it imports, whenever it does, on stderr (in the log).
    gw = start_gateway(gateway_env(simulator, str(keys), PYTHONPROFILEIMPORTTIME="1"))
    try:
        assert chat(gw, "otel-off-1", stream=True).status_code == 200
    finally:
        gw.stop()
    imported = gw.output
    assert "service.app" in imported  # the import log is there
    assert "service.observability.tracing" not in imported
    # redis-py (8+) imports opentelemetry.sdk.metrics itself when it is installed; the
    # gateway loads no exporter, no tracer and no propagator.
    for module in ("opentelemetry.exporter", "opentelemetry.sdk.trace", "opentelemetry.propagate"):
        assert module not in imported


def test_a_collector_that_is_down_fails_no_request_and_holds_up_shutdown_5_s_at_most(
    simulator, tmp_path
):
    import time

    from tests.support.processes import free_port

    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("plain", MAIN_SECRET)))
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gw = start_gateway(
        gateway_env(
            simulator, str(keys), OTEL_EXPORTER_OTLP_ENDPOINT=nobody, OTEL_BSP_SCHEDULE_DELAY="50"
        )
    )
    try:
        assert [chat(gw, f"otel-down-{i}", stream=True).status_code for i in range(3)] == [200] * 3
    finally:
        started = time.monotonic()
        assert gw.stop(timeout=30) == 0
        took = time.monotonic() - started
    assert took < 5 + 3  # the bounded wait, and the process's own exit
    assert "the spans and metrics still queued are dropped" in gw.output


def test_an_unsupported_otlp_protocol_stops_start_up_with_one_line(simulator, tmp_path):
    import subprocess
    import sys

    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("plain", MAIN_SECRET)))
    env = gateway_env(
        simulator,
        str(keys),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    done = subprocess.run(
        [sys.executable, "-m", "service"],
        env={**_plain_env(), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout


def _plain_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}


def _access_line(gw: Proc, request_id: str) -> dict:
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in gw.read_output().splitlines():
            if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                return json.loads(line)
        time.sleep(0.05)
    raise AssertionError(f"no access-log line for {request_id}")
