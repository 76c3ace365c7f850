"""Per-request options and faults: a request's `"sim"` body field over the simulator's defaults.

`chunks`, `delay_ms`, `first_byte_delay_ms` shape the answer; `fault` (`drop`, `stall`,
`bad_chunk`, `status`) with `fault_after`, `stall_ms`, `status` and `message` breaks it;
`fault_times` + `key` limit the fault to the first N requests carrying that key;
`cached_tokens` and `reasoning_tokens` set the usage. The same options serve chat and Responses,
streaming or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.types import Send

from service.simulator.state import State
from service.simulator.wire import Reset, Watch, send_bytes, send_event, send_json, xai_error

_STALL_MS = 3_600_000
_TEAM = "5ea6f6bd-7815-4b8a-9135-28b2d7ba6722"
# What xAI answers a team in trouble, status and message as its API words them.
TEAM_ANSWERS: dict[str, tuple[int, str]] = {
    "rate_limited": (
        429,
        f"Too many requests for team {_TEAM}.",
    ),
    "no_credits": (
        429,
        f"Your team {_TEAM} has either used all available credits or reached its monthly "
        "spending limit. To continue making API requests, please purchase more credits or "
        "raise your spending limit.",
    ),
    "server_error": (500, "Internal server error"),
}


@dataclass(slots=True)
class Options:
    chunks: int
    delay_ms: float
    first_byte_delay_ms: float
    fault: str | None
    fault_after: int
    stall_ms: float
    status: int
    message: str | None
    cached_tokens: int | None
    reasoning_tokens: int | None


def options_for(body: Any, state: State) -> Options:
    """The request's options; counts the request against its `fault_times` key."""
    sim = body.get("sim") if isinstance(body, dict) else None
    sim = sim if isinstance(sim, dict) else {}
    config = state.config
    fault = sim.get("fault", config.fault)
    times, key = sim.get("fault_times"), sim.get("key")
    if times is not None and key is not None:
        seen = state.fault_counts.get(str(key), 0)
        state.fault_counts[str(key)] = seen + 1
        if seen >= _number(times, 0):
            fault = None
    message = sim.get("message")
    return Options(
        chunks=max(1, int(_number(sim.get("chunks"), config.chunks))),
        delay_ms=_number(sim.get("delay_ms"), config.delay_ms),
        first_byte_delay_ms=_number(sim.get("first_byte_delay_ms"), config.first_byte_delay_ms),
        fault=fault if isinstance(fault, str) else None,
        fault_after=int(_number(sim.get("fault_after"), config.fault_after)),
        stall_ms=_number(sim.get("stall_ms"), _STALL_MS),
        status=int(_number(sim.get("status"), 500)),
        message=message if isinstance(message, str) else None,
        cached_tokens=_count(sim.get("cached_tokens")),
        reasoning_tokens=_count(sim.get("reasoning_tokens")),
    )


async def before_answer(options: Options, state: State, watch: Watch, send: Send) -> bool:
    """The first-byte delay and a `status` fault; True if the request ended here."""
    if options.first_byte_delay_ms and await watch.sleep(options.first_byte_delay_ms):
        state.stats.disconnects += 1
        return True
    if options.fault == "status":
        await xai_error(send, options.status, options.message)
        return True
    return False


async def before_whole_answer(options: Options, state: State, watch: Watch, send: Send) -> bool:
    """A non-streaming answer's fault: `drop` cuts the connection in the middle of the body,
    `stall` answers late, `bad_chunk` answers 200 with a body that is not JSON. True if the
    request ended here."""
    if options.fault == "drop":
        # Before the response starts uvicorn would answer 500 for us; after it, it hangs up.
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send_event(send, b'{"id":')
        raise Reset
    if options.fault == "stall" and await watch.sleep(options.stall_ms):
        state.stats.disconnects += 1
        return True
    if options.fault == "bad_chunk":
        await send_bytes(send, 200, b"{not json")
        return True
    return False


def fault_due(options: Options, index: int) -> bool:
    """Whether a stream's fault strikes before its content event `index`."""
    return index == options.fault_after and options.fault is not None


async def mid_stream(options: Options, watch: Watch, send: Send, malformed: bytes) -> bool:
    """The stream's fault, once `fault_due`: `drop` resets the connection, `bad_chunk` sends
    `malformed` (and the stream goes on), `stall` goes silent for `stall_ms`. True if the
    client left during the stall."""
    if options.fault == "drop":
        raise Reset
    if options.fault == "bad_chunk":
        await send_event(send, malformed)
    elif options.fault == "stall":
        return await watch.sleep(options.stall_ms)
    return False


async def team_answer(answer: str, send: Send) -> None:
    status, message = TEAM_ANSWERS[answer]
    await xai_error(send, status, message)


async def set_team_answer(body: Any, state: State, send: Send) -> None:
    """`POST /sim/answer {"answer": "rate_limited" | "no_credits" | "server_error" | null}`."""
    answer = body.get("answer") if isinstance(body, dict) else None
    if answer is not None and answer not in TEAM_ANSWERS:
        await xai_error(send, 400, f"answer must be null or one of {', '.join(TEAM_ANSWERS)}")
        return
    state.team_answer = answer
    await send_json(send, 200, {"answer": answer})


def _number(value: Any, default: float) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return default


def _count(value: Any) -> int | None:
    number = _number(value, -1)
    return int(number) if number >= 0 else None
