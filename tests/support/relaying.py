"""What a client gets from a dialect, without sockets: the framer's events as the dialect
passes them on, read by read."""

from __future__ import annotations

from service.sse.relay import Framer


def relayed(dialect, reads: list[bytes], cap: int = 1 << 20) -> bytes:
    """The bytes sent for `reads` (the upstream's reads, in order), up to the terminal event;
    `cap` is the framer's event size limit."""
    framer = Framer(dialect, cap)
    sent = b""
    for data in reads:
        out, _, done, _ = framer.feed(data)
        sent += dialect.relayed(out) if out else b""
        if done:
            break
    return sent
