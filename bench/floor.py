"""The floor: a bare pass-through on the gateway's stack, nothing else.

Starlette + uvicorn (uvloop, httptools) + one shared httpx client on the aiohttp transport,
written the idiomatic way (`client.send(stream=True)` relayed by a StreamingResponse): no
auth, no limits, no parsing, no logs, no metrics.
Usage: python -m bench.floor PORT UPSTREAM_URL
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def create_app(upstream_url: str) -> Starlette:
    state: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=10000, max_keepalive_connections=10000)
        state["client"] = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=60)
        yield
        await state["client"].aclose()

    async def relay(request: Request) -> Response:
        client = state["client"]
        upstream = await client.send(
            client.build_request(
                "POST",
                upstream_url,
                content=await request.body(),
                headers={"authorization": "Bearer x"},
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

    return Starlette(
        routes=[Route("/api/v1/chat/completions", relay, methods=["POST"])], lifespan=lifespan
    )


if __name__ == "__main__":
    uvicorn.run(
        create_app(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
