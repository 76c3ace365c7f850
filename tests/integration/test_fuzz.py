"""Property-based fuzzing of the request path (SPEC 9): whatever a client sends, the gateway
answers without a 5xx of its own, without a traceback in its log, and charges a request to the
limiter exactly when it admitted it — never for a refusal.

The real app runs in this process (its lifespan on a private event loop, requests through
`httpx.ASGITransport`) on the real simulator, so each example takes milliseconds. What a
request was charged is read as a client reads it: x-ratelimit-remaining-requests of a probe
sent before and after it. To fuzz a new endpoint, add it to ENDPOINTS.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.registry.keys import parse_registry
from service.settings import Settings
from tests.support.keyfiles import MODEL, digest, key_entry, keys_toml
from tests.support.processes import Proc

MAIN = "gk-fuzz-main-0123456789"
ADMIN = "gk-admin-fuzz-0123456789"
ALLOW_LISTED = "gk-fuzz-allow-0123456789"
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    body: dict[str, Any] | None  # a valid body, the seed of the mutations; None: no body
    limited: bool = True  # False: answers without the limiter (spends nothing, even on 200)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    ),
    Endpoint(
        "POST",
        "/api/v1/chat/completions",
        {
            "model": MODEL,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 16,
            "temperature": 0.5,
            "stop": ["\n"],
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                },
            ],
        },
    ),
    Endpoint("POST", "/api/v1/images/generate", {"prompt": "a fox", "stream": True}),
    Endpoint(
        "POST", "/api/v1/images/generations", {"prompt": "a fox", "n": 1, "response_format": "url"}
    ),
    Endpoint(
        "POST",
        "/api/v1/vision/analyze",
        {"image_url": "https://example.com/cat.png", "prompt": "What is it?", "detail": "low"},
    ),
    Endpoint("GET", "/api/v1/models", None),
    Endpoint("POST", "/api/v1/responses", {"model": MODEL, "input": "hi", "store": False}),
    Endpoint(
        "POST",
        "/api/v1/responses",
        {"model": MODEL, "input": [{"role": "user", "content": "hi"}], "stream": True},
    ),
    Endpoint("GET", "/api/v1/responses/resp_0123456789abcdef", None),
    Endpoint("DELETE", "/api/v1/responses/resp_0123456789abcdef", None),
    Endpoint("GET", "/api/v1/usage", None, limited=False),
]

# A 5xx the gateway may answer: the upstream failed, not the gateway.
UPSTREAM_FAILURES = {"upstream_error", "upstream_timeout", "upstream_auth_failed"}

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # nothing written into the repository; failures print their reproduction
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the gateway in this process ---------------------------------------------------------


class InProcessGateway:
    """The real app with its lifespan running on a private event loop; memory limits."""

    def __init__(self, simulator: Proc) -> None:
        registry = parse_registry(
            keys_toml(
                key_entry("main", MAIN, tenant="fuzz"),
                key_entry("allow-listed", ALLOW_LISTED, extra=f'models = ["{MODEL}"]'),
                f'[[admin_keys]]\nid = "ops"\nsha256 = "{digest(ADMIN)}"\n',
                defaults='requests = "100000000/day"',
            ).encode()
        )
        config = Settings(
            xai_api_key="xai-fuzz-upstream-key",
            xai_base_url=f"{simulator.url}/v1",
            max_body_bytes=MAX_BODY,
            upstream_retries=0,
            first_byte_timeout=10.0,
        )
        self.app = create_app(config, registry)
        self.loop = asyncio.new_event_loop()
        self._shutdown = asyncio.Event()
        started = self.loop.create_future()
        self._lifespan = self.loop.create_task(self._run_lifespan(started))
        self.loop.run_until_complete(started)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gateway.test"
        )

    async def _run_lifespan(self, started: asyncio.Future) -> None:
        events = iter([{"type": "lifespan.startup"}])

        async def receive() -> dict:
            event = next(events, None)
            if event is None:
                await self._shutdown.wait()
                return {"type": "lifespan.shutdown"}
            return event

        async def send(message: dict) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set_result(None)
            elif message["type"] == "lifespan.startup.failed":
                started.set_exception(RuntimeError(message.get("message")))

        await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    def request(
        self, method: str, path: str, headers: list, content: bytes | None
    ) -> httpx.Response:
        return self.loop.run_until_complete(
            self.client.request(method, path, headers=headers, content=content, timeout=30)
        )

    def requests_remaining(self, secret: str) -> int:
        """The key's requests left, as a probe request (GET /api/v1/models) is told."""
        headers = [(b"authorization", f"Bearer {secret}".encode())]
        probe = self.request("GET", "/api/v1/models", headers, None)
        assert probe.status_code == 200, probe.text
        return int(probe.headers["x-ratelimit-remaining-requests"])

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self._shutdown.set()
        self.loop.run_until_complete(self._lifespan)
        self.loop.close()


class LogProblems(logging.Handler):
    """Collects records that carry a traceback or are errors, from the gateway's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture(scope="module")
def gateway(simulator: Proc) -> Iterator[InProcessGateway]:
    gw = InProcessGateway(simulator)
    yield gw
    gw.close()


@pytest.fixture(scope="module")
def log_problems() -> Iterator[LogProblems]:
    handler = LogProblems()
    loggers = [logging.getLogger(name) for name in ("service", "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


# --- what a client may send --------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**64, -(2**63) - 1, 10**300])
    | st.floats()  # NaN and ±Infinity included: json.dumps writes them as literals
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


nesting_depths = st.integers(1, 3000) | st.sampled_from([63, 64, 65, 100, 1000, 100_000])


def paths_of(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every path into a JSON value, the value itself first."""
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths_of(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths_of(child, (*path, index))


def mutated(body: dict, path: tuple, action: str, value: Any, new_key: str) -> Any:
    """`body` with the value at `path` replaced or deleted, or a key added under it."""
    if not path and action == "replace":
        return value
    body = copy.deepcopy(body)
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    target = parent[path[-1]] if path else body
    if action == "add" and isinstance(target, dict):
        target[new_key] = value
    elif action == "add" and isinstance(target, list):
        target.append(value)
    elif path and action == "delete":
        del parent[path[-1]]
    elif path:
        parent[path[-1]] = value
    return body


@st.composite
def bodies(draw: st.DrawFn, endpoint: Endpoint) -> bytes | None:
    """Valid bodies broken at any depth, any JSON, deep nesting, huge numbers, non-UTF-8."""
    seed = endpoint.body if endpoint.body is not None else {"model": MODEL}
    kind = draw(
        st.sampled_from(
            ["valid", "mutated", "mutated", "mutated", "any", "deep", "number", "bytes"]
        )
    )
    if kind == "valid":
        return None if endpoint.body is None else json.dumps(seed).encode()
    if kind == "mutated":
        path = draw(st.sampled_from(list(paths_of(seed))))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        value = draw(json_values)
        return json.dumps(mutated(seed, path, action, value, draw(st.text(max_size=10)))).encode()
    if kind == "any":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        deep = nested(draw(nesting_depths), draw(st.sampled_from(["array", "object"])))
        if draw(st.booleans()):
            return deep.encode()  # the whole body
        return json.dumps({**seed, "extra": "DEEP"}).replace('"DEEP"', deep).encode()
    if kind == "number":
        literal = draw(
            st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" * 5000])
        )
        field = draw(st.sampled_from(["temperature", "n", "max_tokens", "extra"]))
        return json.dumps({**seed, field: "NUMBER"}).replace('"NUMBER"', literal).encode()
    raw = json.dumps(seed).encode()
    cut = draw(st.integers(0, len(raw)))
    junk = draw(
        st.binary(max_size=8) | st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\x00"])
    )
    return raw[:cut] + junk + raw[cut:]


latin1_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)


@st.composite
def headers_for(draw: st.DrawFn, body: bytes | None) -> list[tuple[bytes, bytes]]:
    """Authorization, Content-Type and Content-Length, right, wrong, missing or lying."""
    headers: list[tuple[bytes, bytes]] = []
    auth = draw(st.sampled_from(["main"] * 7 + ["allow-listed", "missing", "wrong", "random"]))
    if auth == "random":
        value = "Bearer " + draw(latin1_text)
    elif auth == "wrong":
        value = draw(st.sampled_from(["Bearer gk-unknown", "Basic abc", "Bearer", "", MAIN]))
    else:
        value = {"main": f"Bearer {MAIN}", "allow-listed": f"Bearer {ALLOW_LISTED}"}.get(auth)
    if value is not None:
        headers.append((b"authorization", value.encode("latin-1")))
    content_type = draw(
        st.sampled_from(
            ["application/json", "application/json", None, "text/plain", "multipart/form-data"]
        )
        | latin1_text
    )
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    size = len(body or b"")
    length = draw(
        st.sampled_from(
            [None, None, None, str(size), "0", "-1", "abc", " 12", "1_0", "99999999999999999999"]
        )
        | st.integers(0, 2 * MAX_BODY).map(str)
    )
    if length is not None:
        headers.append((b"content-length", length.encode()))
    return headers


# --- the properties ----------------------------------------------------------------------


PROBED = (MAIN, ALLOW_LISTED)


@pytest.fixture
def remaining(gateway: InProcessGateway) -> dict[str, int]:
    """Each key's requests left, as last probed: at each test's start (after the autouse
    hour guard, so no day window ends within a test), then after each request."""
    return {secret: gateway.requests_remaining(secret) for secret in PROBED}


def send_and_check(
    gateway: InProcessGateway,
    log_problems: LogProblems,
    remaining: dict[str, int],
    method: str,
    path: str,
    headers: list,
    body: bytes | None,
    limited: bool = True,
) -> httpx.Response:
    """Send one request and check the three properties; returns the response."""
    log_problems.records.clear()
    before = dict(remaining)
    try:
        response = gateway.request(method, path, headers, body)
    finally:  # what it spent, even if it failed: the next example starts from there
        remaining.update({secret: gateway.requests_remaining(secret) for secret in PROBED})

    assert not log_problems.records, [r.getMessage() for r in log_problems.records]
    status = response.status_code
    error = response.json().get("error") if status >= 400 else None
    if status >= 500:
        assert error is not None and error["code"] in UPSTREAM_FAILURES, response.text
    admitted = "x-ratelimit-limit-requests" in response.headers
    event(f"{status} {error['code'] if error else ''}{' (admitted)' if admitted else ''}")
    # The probe after the request spent one unit of its own.
    spent = {before[s] - remaining[s] - 1 for s in PROBED} - {0}
    if admitted:
        assert spent == {1}, f"admitted once, counted {spent}"
    else:
        assert not spent, f"{status} refused but counted {spent}: {response.text}"
        if limited or status >= 400:
            assert 400 <= status < 500 and error is not None and error["code"], response.text
    return response


JSON_HEADERS = [
    (b"authorization", f"Bearer {MAIN}".encode()),
    (b"content-type", b"application/json"),
]
WITH_BODY = [e for e in ENDPOINTS if e.body is not None]


@FUZZ
@given(data=st.data())
def test_no_request_to_any_endpoint_gets_a_5xx_a_traceback_or_a_charge_when_refused(
    gateway, log_problems, remaining, data
):
    endpoint = data.draw(st.sampled_from(ENDPOINTS))
    body = data.draw(bodies(endpoint))
    headers = data.draw(headers_for(body))
    method = data.draw(st.sampled_from([endpoint.method] * 12 + ["GET", "POST", "PUT", "DELETE"]))
    path = endpoint.path + data.draw(st.sampled_from(["", "", "", "/"]))
    send_and_check(gateway, log_problems, remaining, method, path, headers, body, endpoint.limited)


ADMIN_PARAMS = ("from", "to", "tenant", "key", "group_by", "format")


@FUZZ
@given(
    params=st.lists(
        st.tuples(st.sampled_from(ADMIN_PARAMS) | st.text(max_size=8), latin1_text), max_size=8
    ),
    admin=st.booleans(),
)
def test_no_admin_usage_query_gets_a_5xx_a_traceback_or_a_charge(
    gateway, log_problems, remaining, params, admin
):
    secret = ADMIN if admin else MAIN
    query = str(httpx.QueryParams(params))
    response = send_and_check(
        gateway,
        log_problems,
        remaining,
        "GET",
        f"/admin/v1/usage?{query}",
        [(b"authorization", f"Bearer {secret}".encode())],
        None,
        limited=False,
    )
    if not admin:
        assert response.status_code == 401


@FUZZ
@given(
    endpoint=st.sampled_from(WITH_BODY),
    depth=nesting_depths,
    kind=st.sampled_from(["array", "object"]),
)
def test_a_body_is_admitted_exactly_when_it_nests_at_most_64_levels(
    gateway, log_problems, remaining, endpoint, depth, kind
):
    raw = json.dumps({**endpoint.body, "extra": "DEEP"}).replace('"DEEP"', nested(depth, kind))
    response = send_and_check(
        gateway, log_problems, remaining, endpoint.method, endpoint.path, JSON_HEADERS, raw.encode()
    )
    too_deep = 1 + depth > 64  # the body's own object is the first level
    assert ("x-ratelimit-limit-requests" in response.headers) is not too_deep, response.text
    if too_deep:
        assert response.status_code == 400
        assert "nested deeper than 64 levels" in response.json()["error"]["message"]


@FUZZ
@given(data=st.data())
def test_a_non_finite_number_anywhere_in_a_body_is_refused(gateway, log_problems, remaining, data):
    endpoint = data.draw(st.sampled_from(WITH_BODY))
    path = data.draw(st.sampled_from(list(paths_of(endpoint.body))))
    literal = data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-2e308"]))
    marked = mutated(endpoint.body, path, "replace", "NON-FINITE", "")
    raw = json.dumps(marked).replace('"NON-FINITE"', literal).encode()
    response = send_and_check(
        gateway, log_problems, remaining, endpoint.method, endpoint.path, JSON_HEADERS, raw
    )
    assert response.status_code == 400, response.text
