"""GET /console and /console/{name}: the web console's static files, read once at start-up.

The page asks for a key itself (kept in the tab's sessionStorage, sent as a bearer header to
the admin and usage APIs), so these files need none. Every answer carries a strict
Content-Security-Policy: scripts, styles, images and requests from this origin only, no inline
script, no framing, so a name in the data that looks like HTML can do nothing even if a bug
ever put it into markup.
"""

from __future__ import annotations

from importlib import resources

from starlette.types import Receive, Scope, Send

from service.http.asgi import send_json
from service.http.errors import error_body

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-cache"),  # revalidated: a new release shows at once
]


def _load_files() -> dict[str, tuple[bytes, bytes]]:
    """Every file of the console's static folder: name -> (content type, bytes)."""
    folder = resources.files("service.console") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (_TYPES[suffix], entry.read_bytes())
    return files


class Console:
    def __init__(self) -> None:
        self.files = _load_files()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope.get("path_params", {}).get("name", "index.html")
        found = self.files.get(name)
        if found is None:
            body = error_body(
                f"No console file {name!r}.", type="invalid_request_error", code="not_found"
            )
            await send_json(send, 404, body)
            return
        content_type, content = found
        headers = [
            (b"content-type", content_type),
            (b"content-length", b"%d" % len(content)),
            *_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else content
        await send({"type": "http.response.body", "body": body})
