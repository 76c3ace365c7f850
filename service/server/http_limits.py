"""The HTTP/1.1 protocol, with bounds on the request head: its size and its arrival time.

uvicorn's httptools protocol keeps a request head in memory however large it grows and waits
for it however slowly it arrives, before the app (and so any key check) sees anything. Here:

- a head larger than `HeadLimits.max_bytes` (64 KiB) is refused with 431 as soon as that many
  bytes have arrived without its end: the parser is never fed more of it;
- a head that has not arrived whole within `HeadLimits.timeout` seconds of the connection
  opening, or of the previous response ending on a kept-alive connection, closes the
  connection (after a 408 if part of it had arrived).

Bodies are not heads: they go to the app, whose body middleware caps them (413). Keep-alive,
pipelining and streaming responses work as in uvicorn; a response's head is written with its
first body bytes (`HeadWithBody`), one system call where uvicorn makes two.

`HttpToolsProtocol` is not uvicorn's public API: pyproject.toml allows the uvicorn versions
this was tested with, and tests/unit/test_uvicorn_internals.py names what moved in another.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.http.errors import error_body
from service.observability.metrics import CONNECTIONS_REFUSED

MAX_HEAD_BYTES = 64 * 1024
_HEAD_END = b"\r\n\r\n"
# After a refusal the connection keeps reading (and discarding) for this long or this many
# bytes before it closes.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_bytes: int = MAX_HEAD_BYTES
    timeout: float = 15.0  # GATEWAY_HEADER_TIMEOUT_SECONDS
    max_connections: int = 10_000  # GATEWAY_MAX_CONNECTIONS, else from the fd limit


# File descriptors a worker keeps for everything but client connections: Redis (its pool,
# the multiplexed connection), the key file, logs, listeners, the upstream's status poll.
_RESERVED_FDS = 512


def default_max_connections() -> int:
    """Client connections a worker takes: half of what its file-descriptor limit leaves after
    the reserve, as each stream holds an upstream connection too. A flood past it is refused
    at once, so the reserve is there for key-file reloads and Redis reconnects."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, (soft - _RESERVED_FDS) // 2)


class GatewayConfig(uvicorn.Config):
    """uvicorn's Config carrying the head limits; pickled whole to worker processes."""

    def __init__(self, app: Any, *, head_limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(app, http=HeadLimitedProtocol, **kwargs)
        self.head_limits = head_limits


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that bounds each request head in bytes and in time.

    While a head is open (from the connection's start, or the end of the previous request,
    until the parser reports the headers complete) the parser is fed at most the bytes the
    head may still take, so it never holds more than the limit.
    """

    def __init__(
        self,
        config: GatewayConfig,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_head = config.head_limits.max_bytes
        self._max_connections = config.head_limits.max_connections
        self._over_cap = False  # refused at connection_made: nothing else is set up
        self._head_timeout = config.head_limits.timeout
        self._head_open = True  # a head is awaited or arriving
        self._head_size = 0  # its bytes so far
        self._timer: asyncio.TimerHandle | None = None  # the head's deadline, or the linger's
        self._head_deadline: float | None = None  # when the awaited head is late; None: none is
        self._refusal: bytes | None = None  # the answer to a refused head, once decided
        self._refusal_sent = False
        self._linger_left = _LINGER_BYTES
        # Set by the parser's callbacks during one feed (pipelined requests).
        self._opened_in_feed = False
        self._body_in_feed = 0

    # --- connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._max_connections:
            # Closed before anything is held: its descriptor is free again at once.
            self._over_cap = True
            CONNECTIONS_REFUSED.inc()
            transport.close()
            return
        self._writes = HeadWithBody(transport, self.loop)
        super().connection_made(self._writes)  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._over_cap:
            return
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._over_cap:
            return
        if self._refusal is not None:  # refused: the parser gets nothing more
            if not self._refusal_sent:
                self.flow.pause_reading()
            else:
                self._linger_left -= len(data)
                if self._linger_left <= 0:
                    self.transport.close()
            return
        view = memoryview(data)
        start, size = 0, len(data)
        while start < size and not self.transport.is_closing():
            end = start + (self._max_head - self._head_size) if self._head_open else size
            piece = data if start == 0 and end >= size else view[start:end]
            self._opened_in_feed = False
            self._body_in_feed = 0
            super().data_received(piece)  # type: ignore[arg-type]  # the parser takes buffers
            if self.transport.is_closing():
                return  # uvicorn answered 400 to a malformed request
            if self._head_open:
                if self._opened_in_feed:
                    self._head_size = self._pipelined_head_bound(data, start, start + len(piece))
                else:
                    self._head_size += len(piece)
                if self._head_size >= self._max_head:
                    self._refuse(
                        431,
                        "request_header_too_large",
                        f"The request head (request line and headers) is larger than "
                        f"{self._max_head} bytes.",
                    )
                    return
            start += len(piece)

    def _pipelined_head_bound(self, data: bytes, start: int, end: int) -> int:
        """At least the bytes of a head that began inside data[start:end], and close to it.

        The parser does not say where in a feed a pipelined request began. That head has
        no blank line yet, so it lies after the feed's last one; and whatever came before it
        in the feed includes the body bytes the parser reported.
        """
        last_blank_line = data.rfind(_HEAD_END, start, end)
        after_blank_line = end - (last_blank_line + 4) if last_blank_line >= 0 else end - start
        return min(after_blank_line, end - start - self._body_in_feed)

    # --- parser callbacks ----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._head_deadline = None  # the timer stays; it finds no head late when it fires
        self._writes.hold_next()  # the response's head: sent with its first body bytes
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_in_feed += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True
        self._head_size = 0
        self._opened_in_feed = True

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)  # a pipelined request whose head is already whole
        super().on_response_complete()
        if queued or self.transport.is_closing():
            return
        if self._refusal is not None:
            self._send_refusal()  # the requests before the refused one are answered
        else:
            self._arm_head_timer()

    # --- time limit ----------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        """Give the next head `timeout` seconds. A timer already set stays set (it looks at
        the deadline when it fires): a kept-alive connection's requests arm none of their
        own (a timer and its cancellation per request cost more than one check)."""
        self._head_deadline = self.loop.time() + self._head_timeout
        if self._timer is None:
            self._timer = self.loop.call_at(self._head_deadline, self._head_timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        deadline = self._head_deadline
        if deadline is None or self.transport.is_closing():
            return  # a request is being answered: its end gives the next head its time
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._head_timed_out)
            return
        if self._head_open and self._head_size > 0:
            self._refuse(
                408,
                "request_timeout",
                f"The request head did not arrive whole within {self._head_timeout:g}s.",
            )
        else:
            self.transport.close()  # an idle kept-alive connection: nothing to answer

    # --- refusal -------------------------------------------------------------------------

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` and close, once the requests before this one are answered."""
        self._cancel_timer()
        body = error_body(message, type="invalid_request_error", code=code)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
        ]
        self._refusal = b"".join(head) + body
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            self.flow.pause_reading()  # on_response_complete sends it
        else:
            self._send_refusal()

    def _send_refusal(self) -> None:
        """Write the refusal and half-close; read and discard a little longer, then close,
        so that a client still sending reads the refusal instead of a reset."""
        assert self._refusal is not None
        self._refusal_sent = True
        self.transport.write(self._refusal)
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._timer = self.loop.call_later(_LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


class HeadWithBody:
    """A connection's transport that holds a response's head back for its first body bytes.

    uvicorn writes a response's head as soon as the app starts the response, then each part
    of its body: two system calls, two packets and two reads for the client where one does,
    since the first body bytes nearly always follow in the same event-loop turn (an error's
    JSON, a stream's first events when they came with the upstream's head). The write after
    `hold_next` waits for the next write, which takes it along, or for the turn's end; every
    other write goes out at once, in order.
    """

    __slots__ = ("_held", "_hold", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._hold = False
        self._held: bytes | None = None

    def hold_next(self) -> None:
        self._hold = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._hold:
            self._hold = False
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport's interface
        return getattr(self._transport, name)
