"""What one tenant's traffic cannot make a gateway process hold (SPEC 15): connections past
GATEWAY_MAX_CONNECTIONS are closed at once, request bodies and whole upstream answers in
flight stay under GATEWAY_MAX_INFLIGHT_BODY_BYTES, and a key at its concurrency cap is
refused before its body is read. Real gateway processes on the simulator."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.support.keyfiles import key_entry, keys_toml
from tests.support.processes import Proc, gateway_env, start_gateway
from tests.support.rawhttp import RawResponse, connect, read_response, request_head, wait_closed

MODEL = "grok-4-1-fast-non-reasoning"
BULKY, CAPPED, OTHER = "gk-bounds-bulky", "gk-bounds-capped", "gk-bounds-other"
THIRD = "gk-bounds-third"


@pytest.fixture(scope="module")
def gateway(simulator: Proc, tmp_path_factory) -> Proc:
    keys = tmp_path_factory.mktemp("process-bounds") / "keys.toml"
    keys.write_text(
        keys_toml(
            key_entry("bulky", BULKY, tenant="bulky"),
            key_entry("capped", CAPPED, tenant="capped", extra="concurrent = 1"),
            key_entry("other", OTHER, tenant="other"),
            key_entry("third", THIRD, tenant="third"),
        )
    )
    env = gateway_env(
        simulator,
        str(keys),
        GATEWAY_MAX_CONNECTIONS="24",
        GATEWAY_MAX_INFLIGHT_BODY_BYTES=str(4 * 300_000),  # 300 KB of bodies, weighted
    )
    proc = start_gateway(env)
    yield proc
    proc.stop()


def chat_body(size: int = 0, first_byte_delay_ms: int = 0) -> bytes:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x" * size or "hi"}],
        "sim": {"first_byte_delay_ms": first_byte_delay_ms},
    }
    return json.dumps(body).encode()


def post(gateway: Proc, secret: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/api/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        timeout=30,
    )


def in_background(call) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return thread, result


def announced(gateway: Proc, secret: str, length: int) -> RawResponse:
    """The answer to a body announced as `length` bytes of which 11 are sent: it cannot
    wait for the rest."""
    sock = connect(int(gateway.url.rsplit(":", 1)[1]))
    try:
        head = request_head(
            "POST",
            "/api/v1/chat/completions",
            f"Authorization: Bearer {secret}",
            "Content-Type: application/json",
            f"Content-Length: {length}",
        )
        sock.sendall(head + b'{"model": "')
        return read_response(sock)
    finally:
        sock.close()


def chat_requests(simulator: Proc) -> int:
    return httpx.get(f"{simulator.url}/sim/stats").json()["chat_requests"]


def reached_upstream(simulator: Proc, before: int) -> None:
    """Wait until a slow request has reached the upstream: its body is held by then."""
    import time

    deadline = time.monotonic() + 10
    while chat_requests(simulator) <= before and time.monotonic() < deadline:
        time.sleep(0.02)


def test_connections_past_the_cap_are_closed_at_once_and_the_rest_serve(gateway: Proc):
    port = int(gateway.url.rsplit(":", 1)[1])
    held = [connect(port) for _ in range(24)]
    try:
        refused = connect(port)
        data, closed_after = wait_closed(refused, timeout=3)
        assert (data, closed_after is not None) == (b"", True)  # closed, nothing answered
        sock = held.pop()
        sock.sendall(request_head("GET", "/healthz"))
        assert read_response(sock).status == 200  # a held connection still serves
    finally:
        for sock in held:
            sock.close()
    assert "gateway_connections_refused_total 1.0" in httpx.get(f"{gateway.url}/metrics").text


def test_bodies_in_flight_past_the_cap_get_503_and_the_cap_frees_when_they_end(
    gateway: Proc, simulator: Proc
):
    """Two tenants hold 140 KB each (weighted, 1,120 KB of the 1,200 KB cap): a third
    tenant's 100 KB body is past the cap, and fits once theirs have ended."""
    held = []
    for secret in (BULKY, OTHER):
        before = chat_requests(simulator)
        held.append(in_background(lambda s=secret: post(gateway, s, chat_body(140_000, 1500))))
        reached_upstream(simulator, before)
    refused = post(gateway, THIRD, chat_body(100_000))
    for thread, result in held:
        thread.join()
        assert result[0].status_code == 200
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_busy"
    assert refused.headers["retry-after"] == "1"
    assert post(gateway, THIRD, chat_body(100_000)).status_code == 200  # freed


def test_one_tenant_holds_at_most_half_the_cap_so_another_tenants_body_fits(
    gateway: Proc, simulator: Proc
):
    """The bulky tenant's second 140 KB body would pass its half of the cap (weighted, 1,120
    of 600 KB): refused, while another tenant's 100 KB body beside the first is served."""
    before = chat_requests(simulator)
    slow, result = in_background(lambda: post(gateway, BULKY, chat_body(140_000, 1500)))
    reached_upstream(simulator, before)
    own = post(gateway, BULKY, chat_body(140_000))
    other = post(gateway, OTHER, chat_body(100_000))
    slow.join()
    assert result[0].status_code == 200
    assert own.status_code == 503 and own.json()["error"]["code"] == "server_busy"
    assert "share" in own.json()["error"]["message"]
    assert other.status_code == 200


def test_a_key_at_its_concurrency_cap_is_refused_before_its_body_is_read(
    gateway: Proc, simulator: Proc
):
    before = chat_requests(simulator)
    slow, result = in_background(lambda: post(gateway, CAPPED, chat_body(0, 1500)))
    reached_upstream(simulator, before)
    answer = announced(gateway, CAPPED, 10_000_000)
    slow.join()
    assert result[0].status_code == 200
    assert answer.status == 429
    assert json.loads(answer.body)["error"]["code"] == "concurrency_limit_exceeded"


def test_a_body_with_no_room_is_refused_on_its_content_length_before_it_is_read(
    gateway: Proc,
):
    """200 KB announced (800 KB weighted, past one tenant's 600 KB half of the cap), a few
    bytes sent: the 503 comes at once, not after the rest of the body."""
    answer = announced(gateway, BULKY, 200_000)
    assert answer.status == 503
    assert json.loads(answer.body)["error"]["code"] == "server_busy"
    assert post(gateway, BULKY, chat_body(100_000)).status_code == 200  # nothing stays held
