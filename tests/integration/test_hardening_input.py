"""Malformed bodies and paths that once got a 5xx, went upstream or were redirected (SPEC 9):
each is refused with a 400 naming the problem, before the limiter, so it spends nothing.
"""

from __future__ import annotations

import json

import httpx
import psutil
import pytest

from tests.support.keyfiles import MAIN_SECRET, MODEL, key_entry, keys_toml
from tests.support.processes import Proc, gateway_env, running, start_gateway

CHAT = "/api/v1/chat/completions"
AUTH = {"Authorization": f"Bearer {MAIN_SECRET}", "Content-Type": "application/json"}
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(simulator, tmp_path_factory) -> Proc:
    keys = tmp_path_factory.mktemp("input") / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET), defaults='requests = "1000000/day"'))
    with running(start_gateway(gateway_env(simulator, str(keys)))) as proc:
        yield proc


def post(gw: Proc, content: bytes, path: str = CHAT) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", content=content, headers=AUTH, timeout=30)


def remaining_requests(gw: Proc) -> int:
    """The key's remaining request budget, read with a request (which spends one)."""
    response = httpx.get(f"{gw.url}/api/v1/models", headers=AUTH)
    assert response.status_code == 200
    return int(response.headers["x-ratelimit-remaining-requests"])


def assert_refused_uncharged(gw: Proc, content: bytes, says: str, param: str | None = None):
    before = remaining_requests(gw)
    response = post(gw, content)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request_error"
    assert says in error["message"]
    if param is not None:
        assert error["param"] == param
    assert "x-ratelimit-remaining-requests" not in response.headers
    assert remaining_requests(gw) == before - 1  # only the second probe was counted
    output = gw.read_output()
    assert "Traceback" not in output and '"internal_error"' not in output


def chat_with(extra: str) -> bytes:
    """A valid chat body with `"extra": <extra>` spliced in as raw JSON text."""
    return (
        json.dumps({"model": MODEL, "messages": MESSAGES, "extra": "X"})
        .replace('"X"', extra)
        .encode()
    )


@pytest.mark.parametrize("levels", [65, 100, 1000, 100_000])
def test_body_nested_deeper_than_64_levels_is_400_and_spends_nothing(gw, levels):
    nested = "[" * (levels - 1) + "]" * (levels - 1)  # inside the body's own object
    assert_refused_uncharged(gw, chat_with(nested), "nested deeper than 64 levels")


def test_body_nested_64_levels_is_served(gw):
    assert post(gw, chat_with("[" * 63 + "]" * 63)).status_code == 200


def test_object_nested_100000_levels_as_the_whole_body_is_400(gw):
    assert_refused_uncharged(gw, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested deeper")


def test_body_of_millions_of_empty_objects_is_413_before_it_is_parsed(gw):
    """20 MB of `{},` parsed would take ~500 MB, the pod's whole memory limit."""
    process = psutil.Process(gw.popen.pid)
    rss_before = process.memory_info().rss
    response = post(gw, chat_with("[" + "{}," * 6_500_000 + "{}]"))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert "more than 250000 keys and values" in response.json()["error"]["message"]
    assert process.memory_info().rss - rss_before < 120 * 1024 * 1024


@pytest.mark.parametrize(("values", "status"), [(250_000, 200), (250_001, 413)])
def test_body_may_hold_up_to_250000_keys_and_values(gw, values, status):
    extra = "[" + ",".join(["0"] * (values - 11)) + "]"  # 11: the other keys and values
    assert post(gw, chat_with(extra)).status_code == status


def test_megabytes_of_prose_full_of_commas_quotes_and_backslashes_are_served(gw):
    prose = 'He said, "look: [here] and {there}", then \\ left; ' * 100_000  # 5 MB
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prose}]})
    assert post(gw, body.encode()).status_code == 200


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literal_is_400_and_spends_nothing(gw, literal):
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "temperature": 1}).replace(
        '"temperature": 1', f'"temperature": {literal}'
    )
    assert_refused_uncharged(gw, body.encode(), f"contains {literal}")


def test_number_overflowing_to_infinity_is_400_naming_its_field(gw):
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "top_p": "X"}).replace('"X"', "1e999")
    assert_refused_uncharged(gw, body.encode(), "'top_p' is a number too large", param="top_p")


@pytest.mark.parametrize("role", [["user"], {"user": True}], ids=["list", "object"])
def test_role_that_is_not_a_string_is_400_naming_the_message(gw, role):
    body = json.dumps({"model": MODEL, "messages": [{"role": role, "content": "hi"}]})
    assert_refused_uncharged(gw, body.encode(), "messages[0].role", param="messages")


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ({"role": "user", "content": [{"type": "text", "text": 5}]}, "content[0].text"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": 5}]}, "image_url"),
        ({"role": "user", "content": [{"text": "no type"}]}, "content[0].type"),
        ({"role": "assistant", "tool_calls": "call"}, "tool_calls"),
        ({"role": "user", "content": "hi", "name": ["x"]}, "messages[0].name"),
    ],
    ids=["text", "image_url", "part-type", "tool_calls", "name"],
)
def test_wrong_type_deep_in_a_message_is_400_naming_the_field(gw, message, says):
    body = json.dumps({"model": MODEL, "messages": [message]})
    assert_refused_uncharged(gw, body.encode(), says, param="messages")


@pytest.mark.parametrize(
    "bad_bytes",
    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"],
    ids=["invalid-byte", "truncated", "encoded-surrogate", "overlong"],
)
def test_body_that_is_not_utf8_is_400_and_spends_nothing(gw, bad_bytes):
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    assert_refused_uncharged(
        gw, body.replace(b'"hi"', b'"h' + bad_bytes + b'i"'), "not valid UTF-8"
    )


@pytest.mark.parametrize(
    "model",
    [
        "grok\n-4",
        "grok\u0000",
        "\ud800",
        "grok\u202e",
        "g" * 129,
        "grok 4",
        "=1+1",
        "(other)",
        "-",
        "grok\uff1d4",
        "caf\u00e9",
    ],
    ids=[
        "newline",
        "nul",
        "lone-surrogate",
        "bidi-override",
        "too-long",
        "space",
        "formula",
        "ledger-other-marker",
        "ledger-no-model-marker",
        "full-width",
        "non-ascii-letter",
    ],
)
def test_model_name_that_cannot_go_into_logs_and_metrics_is_400(gw, model):
    body = json.dumps({"model": model, "messages": MESSAGES})  # ensure_ascii: escapes survive
    assert_refused_uncharged(gw, body.encode(), "'model' must be a model name", param="model")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/images/generations", {"prompt": "a fox", "model": "x\ty"}),
        ("/api/v1/vision/analyze", {"image_url": "https://e.com/a.png", "model": "x\ny"}),
    ],
)
def test_model_name_is_checked_on_every_endpoint(gw, path, body):
    response = post(gw, json.dumps(body).encode(), path)
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"


def test_trailing_slash_is_served_as_the_path_without_it_and_never_redirected(gw):
    headers = {**AUTH, "Host": "attacker.example"}
    body = {"model": MODEL, "messages": MESSAGES}
    with httpx.Client(base_url=gw.url, headers=headers, follow_redirects=False) as client:
        chat = client.post("/api/v1/chat/completions/", json=body)
        models = client.get("/api/v1/models/")
        health = client.get("/healthz/")
    assert [chat.status_code, models.status_code, health.status_code] == [200, 200, 200]
    assert chat.json()["object"] == "chat.completion"
    assert all("location" not in r.headers for r in (chat, models, health))


def test_unknown_path_with_a_trailing_slash_is_404_not_a_redirect(gw):
    response = httpx.get(f"{gw.url}/nowhere/", headers={"Host": "attacker.example"})
    assert response.status_code == 404 and "location" not in response.headers
