"""The simulated xAI API as plain ASGI: routing, the key check, and the endpoints for tests.

Cheap enough never to be the benchmark's bottleneck. Routes: `GET /v1/models` (no key needed:
it is also the readiness probe), `GET /v1/api-key`, `POST /v1/chat/completions`,
`POST /v1/images/generations`, `POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`.
A missing key is xAI's 401, a wrong one (with `api_key`) xAI's 400, a blocked or disabled key
xAI's 403 on everything but `/v1/api-key`. `GET /sim/stats`, `POST /sim/reset` and
`POST /sim/key-status` are for tests, and `POST /sim/answer` makes every inference call
(chat, Responses, images) answer as an xAI team in trouble does (`faults.TEAM_ANSWERS`).
`x-grok-conv-id` selects the prompt cache (`cache.py`).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.simulator import chat, faults, images, keys, responses
from service.simulator.cache import with_cached_tokens
from service.simulator.state import SimulatorConfig, State
from service.simulator.usage import MODELS
from service.simulator.wire import Watch, parse_json, read_body, send_json, xai_error

__all__ = ["SimulatorConfig", "create_app"]

_RESPONSE_PATH = "/v1/responses/"
_METHODS = {
    "/v1/models": ("GET",),
    "/v1/api-key": ("GET",),
    "/v1/chat/completions": ("POST",),
    "/v1/images/generations": ("POST",),
    "/v1/responses": ("POST",),
}
_RESPONSE_METHODS = ("GET", "DELETE")


def create_app(config: SimulatorConfig | None = None) -> ASGIApp:
    """The simulator as an ASGI app (run it under uvicorn, or in-process for --demo)."""
    state = State(config or SimulatorConfig())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path.startswith("/sim/"):
            await _control(method, path, state, receive, send)
            return
        state.stats.requests += 1
        raw = await read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = parse_json(raw)
        request = {"method": method, "path": path, "headers": headers, "body": body}
        state.stats.last_request = request
        watch = Watch(receive)
        try:
            await _route(method, path, headers, body, state, watch, send)
        finally:
            watch.close()

    return app


async def _route(
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    state: State,
    watch: Watch,
    send: Send,
) -> None:
    allowed = _RESPONSE_METHODS if path.startswith(_RESPONSE_PATH) else _METHODS.get(path)
    if allowed is None:
        await xai_error(send, 404, f"No route for {method} {path}")
        return
    if method not in allowed:
        await xai_error(send, 405, f"Method {method} is not allowed on {path}")
        return
    if path == "/v1/models":
        await send_json(send, 200, {"object": "list", "data": [_model(m) for m in MODELS]})
        return
    if not await _authorised(headers, state, send):
        return
    stats = state.stats
    if path == "/v1/api-key":
        stats.api_key_requests += 1
        await send_json(send, 200, keys.info(_token(headers), state.key_status))
        return
    if refusal := keys.refusal(state.key_status):
        await xai_error(send, 403, refusal)
        return
    if method == "POST" and state.team_answer is not None:
        stats.refused_requests += 1
        await faults.team_answer(state.team_answer, send)
        return
    if method == "POST":
        body = with_cached_tokens(path, body, headers.get("x-grok-conv-id"), state.prompt_cache)
    if path == "/v1/chat/completions":
        stats.chat_requests += 1
        await chat.handle(body, state, watch, send)
    elif path == "/v1/images/generations":
        stats.image_requests += 1
        await images.generate(body, state, watch, send)
    elif path == "/v1/responses":
        stats.responses_requests += 1
        await responses.create(body, state, watch, send)
    else:
        stats.responses_requests += 1
        response_id = path[len(_RESPONSE_PATH) :]
        if method == "GET":
            await responses.retrieve(response_id, state, send)
        else:
            await responses.delete(response_id, state, send)


async def _authorised(headers: dict[str, str], state: State, send: Send) -> bool:
    """xAI's answers to a missing (401) or, with `api_key` set, a wrong (400) key."""
    token = _token(headers)
    if not token:
        await xai_error(send, 401, "No API key provided. Pass it as 'Authorization: Bearer KEY'.")
        return False
    expected = state.config.api_key
    if expected is not None and token != expected:
        await xai_error(
            send,
            400,
            f"Incorrect API key provided: {token[:2]}***{token[-2:]}. "
            "You can obtain an API key from https://console.x.ai.",
        )
        return False
    return True


def _token(headers: dict[str, str]) -> str:
    given = headers.get("authorization", "")
    return given[7:] if given.startswith("Bearer ") else ""


async def _control(method: str, path: str, state: State, receive: Receive, send: Send) -> None:
    if path == "/sim/stats" and method == "GET":
        await send_json(send, 200, state.public_stats())
    elif path == "/sim/reset" and method == "POST":
        state.reset()
        await send_json(send, 200, {"reset": True})
    elif path == "/sim/key-status" and method == "POST":
        await keys.set_status(parse_json(await read_body(receive)), state, send)
    elif path == "/sim/answer" and method == "POST":
        await faults.set_team_answer(parse_json(await read_body(receive)), state, send)
    else:
        await xai_error(send, 404, f"No route for {method} {path}")


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "xai"}
