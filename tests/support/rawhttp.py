"""HTTP/1.1 over a plain socket, for tests that must send what no HTTP client would."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; the last value wins
    body: bytes


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, buffered: bytearray | None = None) -> RawResponse:
    """Read one response with a Content-Length or chunked body; `buffered` keeps what follows."""
    buf = buffered if buffered is not None else bytearray()
    while b"\r\n\r\n" not in buf:
        _fill(sock, buf)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    buf[:] = rest
    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(buf) < size:
            _fill(sock, buf)
        body = bytes(buf[:size])
        del buf[:size]
    else:  # chunked
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                _fill(sock, buf)
            size_line, _, _ = bytes(buf).partition(b"\r\n")
            size = int(size_line, 16)
            needed = len(size_line) + 2 + size + 2
            while len(buf) < needed:
                _fill(sock, buf)
            body += buf[len(size_line) + 2 : len(size_line) + 2 + size]
            del buf[:needed]
            if size == 0:
                break
        body = bytes(body)
    return RawResponse(int(status_line.split()[1]), headers, body)


def wait_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """Read until the peer closes; returns what arrived and when it closed (None: still open)."""
    started = time.monotonic()
    received = bytearray()
    sock.settimeout(0.05)
    while time.monotonic() - started < timeout:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset
            return bytes(received), time.monotonic() - started
        if not chunk:
            return bytes(received), time.monotonic() - started
        received += chunk
    return bytes(received), None


def _fill(sock: socket.socket, buf: bytearray) -> None:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError(f"closed after {bytes(buf[:200])!r}")
    buf += chunk
