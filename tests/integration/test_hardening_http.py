"""Attacks on the HTTP layer, before any key check (SPEC 9): endless and trickling request
heads, idle kept-alive connections, bodies that lie about their length. Each test replays an
attack on a real gateway process over a raw socket; the header and body timeouts are 1 s here.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import psutil
import pytest

from tests.support.keyfiles import MAIN_SECRET, MODEL, key_entry, keys_toml
from tests.support.processes import Proc, gateway_env, running, start_gateway
from tests.support.rawhttp import connect, read_response, request_head, wait_closed

HEAD_LIMIT = 64 * 1024
TIMEOUT = 1.0
AUTH = f"Authorization: Bearer {MAIN_SECRET}"
CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(scope="module")
def gw(simulator, tmp_path_factory) -> Proc:
    keys = tmp_path_factory.mktemp("http") / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET), defaults='requests = "1000000/day"'))
    env = gateway_env(
        simulator,
        str(keys),
        GATEWAY_HEADER_TIMEOUT_SECONDS=str(TIMEOUT),
        GATEWAY_BODY_TIMEOUT_SECONDS=str(TIMEOUT),
    )
    with running(start_gateway(env)) as proc:
        yield proc


def head_of_size(size: int) -> bytes:
    """A GET /healthz head of exactly `size` bytes (padded with one header)."""
    start = b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\nX-Padding: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def assert_no_traceback(proc: Proc) -> None:
    output = proc.read_output()
    assert "Traceback" not in output and '"level": "error"' not in output, output[-3000:]


def chat_request(*extra_headers: str, body: bytes = CHAT) -> bytes:
    head = request_head(
        "POST",
        "/api/v1/chat/completions",
        AUTH,
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra_headers,
    )
    return head + body


def remaining_requests(proc: Proc) -> int:
    """The key's remaining request budget, read with a request (which spends one)."""
    response = httpx.get(
        f"{proc.url}/api/v1/models", headers={"Authorization": f"Bearer {MAIN_SECRET}"}
    )
    assert response.status_code == 200
    return int(response.headers["x-ratelimit-remaining-requests"])


# --- size -------------------------------------------------------------------------------


def test_endless_header_value_is_cut_off_and_memory_stays_bounded(gw):
    """Two attackers send header values without end (reconnecting when cut off) for 3 s."""
    process = psutil.Process(gw.popen.pid)
    rss_before = process.memory_info().rss
    deadline = time.monotonic() + 3.0
    connections = [0, 0]

    def attack(slot: int) -> None:
        while time.monotonic() < deadline:
            connections[slot] += 1
            with connect(gw.port) as sock:
                try:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\nX-Endless: ")
                    while time.monotonic() < deadline:
                        sock.sendall(b"a" * 65536)
                except OSError:
                    continue  # cut off: come back

    attackers = [threading.Thread(target=attack, args=(slot,)) for slot in (0, 1)]
    for thread in attackers:
        thread.start()
    statuses = []
    while time.monotonic() < deadline - 0.5:
        statuses.append(httpx.get(f"{gw.url}/healthz", timeout=2.0).status_code)
        time.sleep(0.1)
    peak_rss = process.memory_info().rss
    for thread in attackers:
        thread.join()

    assert min(connections) >= 2, "an endless head was never cut off"
    assert (peak_rss - rss_before) < 24 * 1024 * 1024, (rss_before, peak_rss)
    assert statuses and set(statuses) == {200}  # normal requests served throughout (< 2 s each)
    assert_no_traceback(gw)


def test_head_of_exactly_64_kib_is_served(gw):
    with connect(gw.port) as sock:
        sock.sendall(head_of_size(HEAD_LIMIT))
        assert read_response(sock).status == 200


def test_head_one_byte_over_64_kib_is_refused_with_431_and_closed(gw):
    with connect(gw.port) as sock:
        sock.sendall(head_of_size(HEAD_LIMIT + 1))
        response = read_response(sock)
        assert response.status == 431
        assert json.loads(response.body)["error"]["code"] == "request_header_too_large"
        assert response.headers["connection"] == "close"
        assert wait_closed(sock, 5.0)[1] is not None


def test_head_is_refused_as_soon_as_64_kib_arrive_without_its_end(gw):
    with connect(gw.port) as sock:
        sock.sendall(head_of_size(2 * HEAD_LIMIT)[:HEAD_LIMIT])  # and nothing more
        assert read_response(sock).status == 431


def test_pipelined_request_with_an_oversized_head_is_refused_after_the_ones_before(gw):
    with connect(gw.port) as sock:
        sock.sendall(request_head("GET", "/healthz") + head_of_size(HEAD_LIMIT + 1))
        buffered = bytearray()
        assert read_response(sock, buffered).status == 200
        assert read_response(sock, buffered).status == 431


# --- time -------------------------------------------------------------------------------


def test_heads_trickling_a_byte_at_a_time_are_closed_after_the_header_timeout(gw):
    sockets = [connect(gw.port) for _ in range(50)]
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    answers: dict[int, bytes] = {}
    for sock in sockets:
        sock.setblocking(False)
        sock.send(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    while len(closed_at) < len(sockets) and time.monotonic() - opened < 4 * TIMEOUT:
        time.sleep(0.1)
        for i, sock in enumerate(sockets):
            if i in closed_at:
                continue
            try:
                sock.send(b"a")
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            answers[i] = answers.get(i, b"") + data
            if not data:
                closed_at[i] = time.monotonic() - opened
    for sock in sockets:
        sock.close()

    assert len(closed_at) == len(sockets), f"{len(sockets) - len(closed_at)} still open"
    assert min(closed_at.values()) >= 0.8 * TIMEOUT and max(closed_at.values()) < 3 * TIMEOUT
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers.values() if answer)


def test_connection_opened_without_a_byte_is_closed_after_the_header_timeout(gw):
    with connect(gw.port) as sock:
        data, closed_after = wait_closed(sock, 4 * TIMEOUT)
    assert data == b"" and closed_after is not None and closed_after >= 0.8 * TIMEOUT


def test_idle_kept_alive_connection_is_closed_after_the_header_timeout(gw):
    with connect(gw.port) as sock:
        sock.sendall(request_head("GET", "/healthz"))
        assert read_response(sock).status == 200
        data, closed_after = wait_closed(sock, 4 * TIMEOUT)
    assert data == b""  # nothing to answer on an idle connection: just closed
    assert closed_after is not None and 0.8 * TIMEOUT <= closed_after < 3 * TIMEOUT


def test_kept_alive_connection_used_within_the_timeout_serves_every_request(gw):
    with connect(gw.port) as sock:
        for _ in range(3):
            sock.sendall(request_head("GET", "/healthz"))
            assert read_response(sock).status == 200
            time.sleep(0.6 * TIMEOUT)
        sock.sendall(chat_request())
        assert read_response(sock).status == 200


def test_stream_longer_than_the_header_timeout_is_not_cut(gw):
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "sim": {"chunks": 8, "delay_ms": 300},  # 2.4 s
    }
    with connect(gw.port) as sock:
        sock.sendall(chat_request(body=json.dumps(body).encode()))
        response = read_response(sock)
        assert response.status == 200
        assert response.body.endswith(b"data: [DONE]\n\n")
        sock.sendall(request_head("GET", "/healthz"))  # and the connection is still good
        assert read_response(sock).status == 200


def test_pipelined_requests_with_bodies_are_all_answered_in_order(gw):
    pipeline = (
        request_head("GET", "/healthz")
        + chat_request()
        + chat_request(body=b'{"model": 1}')
        + request_head("GET", "/readyz", "Connection: close")
    )
    with connect(gw.port) as sock:
        sock.sendall(pipeline)
        buffered = bytearray()
        statuses = [read_response(sock, buffered).status for _ in range(4)]
    assert statuses == [200, 200, 400, 200]


def test_large_body_sent_with_its_head_is_not_counted_as_head(gw):
    content = "x" * (300 * 1024)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": content}]})
    with connect(gw.port) as sock:
        sock.sendall(chat_request(body=body.encode()))  # one write: head and 300 KiB
        assert read_response(sock).status == 200


# --- bodies that lie about their length ---------------------------------------------------


def test_body_shorter_than_its_content_length_gets_408_closes_and_spends_nothing(gw):
    before = remaining_requests(gw)
    with connect(gw.port) as sock:
        head = request_head("POST", "/api/v1/chat/completions", AUTH, "Content-Length: 1000")
        sock.sendall(head + CHAT[:10])
        started = time.monotonic()
        response = read_response(sock)
        waited = time.monotonic() - started
        assert response.status == 408
        assert json.loads(response.body)["error"]["code"] == "request_timeout"
        assert wait_closed(sock, 3.0)[1] is not None
    assert 0.8 * TIMEOUT <= waited < 3 * TIMEOUT
    assert remaining_requests(gw) == before - 1  # only the probe was counted
    assert_no_traceback(gw)


def test_body_longer_than_its_content_length_gets_4xx_not_5xx(gw):
    with connect(gw.port) as sock:
        head = request_head(
            "POST", "/api/v1/chat/completions", AUTH, f"Content-Length: {len(CHAT) - 5}"
        )
        sock.sendall(head + CHAT)  # the last 5 bytes read as the start of a next request
        answers, closed_after = wait_closed(sock, 5.0)
    assert closed_after is not None
    statuses = [int(line.split()[1]) for line in answers.split(b"\r\n") if line[:5] == b"HTTP/"]
    assert statuses and all(400 <= status < 500 for status in statuses), answers
    assert_no_traceback(gw)


# --- every way the server starts ----------------------------------------------------------


def test_worker_processes_refuse_an_oversized_head(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    env = gateway_env(simulator, str(keys), GATEWAY_WORKERS="2")
    with running(start_gateway(env)) as proc, connect(proc.port) as sock:
        sock.sendall(head_of_size(HEAD_LIMIT + 1))
        assert read_response(sock).status == 431


def test_demo_refuses_an_oversized_head():
    with running(start_gateway({}, "--demo")) as proc, connect(proc.port) as sock:
        sock.sendall(head_of_size(HEAD_LIMIT + 1))
        assert read_response(sock).status == 431
