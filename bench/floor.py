"""The floors: bare pass-throughs on the gateway's stack, nothing else.

Two of them, both uvicorn (uvloop, httptools) and one shared httpx-on-aiohttp transport, with
no auth, no limits, no parsing, no logs, no metrics:

- `starlette`: the idiomatic way, `client.send(stream=True)` relayed by a Starlette
  `StreamingResponse`;
- `raw` (the strictest): a plain ASGI callable that hands the request to the shared
  `AiohttpTransport` (`handle_async_request`), iterates `aiter_raw()` and sends each piece of
  bytes as it comes. Nothing a relay can do is cheaper on this stack; the targets compare
  the gateway against it.

Both relay `POST /api/v1/<path>` to `POST {upstream}/v1/<path>` (chat completions, the
Responses API, images), status, content type and body bytes untouched.
Usage: python -m bench.floor PORT UPSTREAM_ROOT [--raw]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

PATHS = ("chat/completions", "responses", "images/generations")
_LIMITS = httpx.Limits(max_connections=10000, max_keepalive_connections=10000)
_HEADERS = [(b"authorization", b"Bearer x"), (b"content-type", b"application/json")]


def create_app(upstream_root: str) -> Starlette:
    """The idiomatic floor: Starlette route, `AsyncClient.send`, `StreamingResponse`."""
    state: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["client"] = httpx.AsyncClient(transport=AiohttpTransport(limits=_LIMITS), timeout=60)
        yield
        await state["client"].aclose()

    def route(path: str) -> Route:
        url = f"{upstream_root}/v1/{path}"

        async def relay(request: Request) -> Response:
            client = state["client"]
            upstream = await client.send(
                client.build_request(
                    "POST", url, content=await request.body(), headers={"authorization": "Bearer x"}
                ),
                stream=True,
            )

            async def body() -> AsyncIterator[bytes]:
                try:
                    async for chunk in upstream.aiter_raw():
                        yield chunk
                finally:
                    await upstream.aclose()

            return StreamingResponse(
                body(),
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type"),
            )

        return Route(f"/api/v1/{path}", relay, methods=["POST"])

    return Starlette(routes=[route(p) for p in PATHS], lifespan=lifespan)


class RawFloor:
    """The strictest floor: plain ASGI over the transport. The lifespan owns the transport."""

    def __init__(self, upstream_root: str) -> None:
        self.urls = {f"/api/v1/{p}".encode(): httpx.URL(f"{upstream_root}/v1/{p}") for p in PATHS}
        self.transport: AiohttpTransport | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        url = self.urls.get(scope["raw_path"])
        if url is None or scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        assert self.transport is not None
        upstream = await self.transport.handle_async_request(
            httpx.Request("POST", url, headers=_HEADERS, content=body)
        )
        try:
            content_type = upstream.headers.get("content-type", "application/json").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": [(b"content-type", content_type)],
                }
            )
            async for chunk in upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await upstream.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.transport = AiohttpTransport(limits=_LIMITS)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.transport is not None:
                    await self.transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("port", type=int)
    parser.add_argument("upstream_root", help="the simulator's root URL, without /v1")
    parser.add_argument("--raw", action="store_true", help="the plain-ASGI floor")
    args = parser.parse_args()
    app = RawFloor(args.upstream_root) if args.raw else create_app(args.upstream_root)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
