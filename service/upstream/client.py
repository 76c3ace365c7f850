"""The upstream HTTP client: httpx's API on aiohttp's transport, one per upstream.

httpx's own transport relayed an order of magnitude fewer concurrent streams than httpx over
aiohttp's (docs/performance.md), so the transport is aiohttp's. Its connection limit is raised
to match thousands of concurrent streams (its default of 100 queues everything beyond).

Requests are built once per call as `httpx.Request` objects and handed to the transport
directly, with no `httpx.AsyncClient`: its auth, redirect and cookie layers would cost CPU on
every stream and do nothing for a fixed-credential, no-redirect, no-cookie upstream. The pool
(`pool.py`, opened and closed by the app lifespan) makes one `Upstream` per upstream, all on
one transport it owns; an `Upstream(settings)` alone owns its own.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from service import __version__
from service.settings import Settings


class Upstream:
    """One upstream's base URL, credentials, timeouts and the pooled transport behind them.

    Several upstreams (the key file's `[[upstreams]]`) share one transport, given as
    `transport`; only the Upstream that made its transport closes it.
    """

    def __init__(
        self,
        settings: Settings,
        base_url: str | None = None,
        api_key: str | None = None,
        transport: AiohttpTransport | None = None,
    ) -> None:
        self._owns_transport = transport is None
        self.transport = transport or shared_transport(settings)
        self.base_url = base_url or settings.xai_base_url
        api_key = settings.xai_api_key if api_key is None else api_key
        self._headers = [
            (b"host", httpx.URL(self.base_url).netloc),
            (b"authorization", f"Bearer {api_key}".encode()),
            (b"user-agent", f"grok-gateway/{__version__}".encode()),
            (b"accept-encoding", b"identity"),  # relay bytes as they come, never re-compress
        ]
        self._urls: dict[str, httpx.URL] = {}
        self._templates: dict[tuple[bytes, bool], httpx.Headers] = {}  # by (accept, has body)
        self._extensions = {
            "timeout": httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.idle_timeout,  # between chunks; the first byte has its own deadline
                write=settings.connect_timeout,
                pool=settings.connect_timeout,
            ).as_dict()
        }

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        accept: bytes,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> httpx.Request:
        """The upstream request, built as requests handed to a transport are: its headers
        copied from a template made once (a copy of `httpx.Headers` is not normalised
        again), its body given as a stream, so httpx adds and rebuilds no headers of its own
        (`content=` normalised ours twice). `extra`: headers of this request only (the
        conversation id)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(f"{self.base_url}/{path}")
        kind = (accept, body is not None)
        template = self._templates.get(kind)
        if template is None:
            raw = [*self._headers, (b"accept", accept)]
            if body is not None:
                raw.append((b"content-type", b"application/json"))
            template = self._templates[kind] = httpx.Headers(raw)
        headers = httpx.Headers(template)
        for name, value in extra:
            headers[name.decode()] = value.decode("latin-1")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            headers["content-length"] = str(len(body or b""))
        request = httpx.Request(
            method,
            url,
            headers=headers,
            stream=httpx.ByteStream(body or b""),
            extensions=self._extensions,
        )
        request.read()  # the transport sends `request.content`
        return request

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send and return the response with its body unread; close it with `aclose()`."""
        response = await self.transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        if self._owns_transport:
            await self.transport.aclose()


def shared_transport(settings: Settings) -> AiohttpTransport:
    """The pooled aiohttp transport every upstream request goes through."""
    limit = settings.upstream_max_connections

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limit, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=60
        )
        # No cookies: one upstream session is shared by every tenant.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return AiohttpTransport(
        limits=httpx.Limits(
            max_connections=limit, max_keepalive_connections=limit, keepalive_expiry=30.0
        ),
        client=session,
    )
