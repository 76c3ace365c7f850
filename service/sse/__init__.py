"""Server-Sent Events: relay an upstream stream to the client as it arrives.

`relay.py` is the loop (bytes in, bytes out, no JSON per event), `dialects.py` what differs
between chat chunks and Responses API events, `streams.py` the keep-alives on silent streams.
"""

from service.sse.dialects import (
    DONE,
    ChatDialect,
    Dialect,
    ResponsesDialect,
    completion_as_chunk,
)
from service.sse.relay import SSE_HEADERS, RelayResult, relay_sse
from service.sse.streams import StreamSet

__all__ = [
    "DONE",
    "SSE_HEADERS",
    "ChatDialect",
    "Dialect",
    "RelayResult",
    "ResponsesDialect",
    "StreamSet",
    "completion_as_chunk",
    "relay_sse",
]
