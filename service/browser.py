"""What keeps a browser from being turned against the API or its user.

- Open mode (no API keys: the single-user `bolab up` on loopback) answers only requests whose
  `Host` is a loopback name (localhost, 127.0.0.1, [::1], any port), else 400. A page of another
  site whose name was rebound to 127.0.0.1 (DNS rebinding) sends that name as `Host`: it can
  reach the port but not the API. With keys configured every request needs a key anyway.
- Every answer carries `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, a
  `Referrer-Policy` and a Content-Security-Policy: the web page's (`/ui`: its own origin only,
  no inline script or style), the docs page's (set by `service.routes.docs`), or for API answers
  one that allows nothing at all.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobmodel.settings import Settings
from service.auth import is_loopback, keyring

UI_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def host_name(host: str) -> str | None:
    """The name of a `Host` header value without its port ("[::1]:8000" -> "::1")."""
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:  # "[::1" and the like
        return None


class LoopbackHostOnly:
    """ASGI middleware: in open mode, a request whose `Host` is not a loopback name is 400."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and keyring(self.settings).open:
            host = Headers(scope=scope).get("host", "")
            name = host_name(host)
            if name is None or not is_loopback(name):
                response = JSONResponse(
                    {
                        "detail": f"Host {host!r} refused: without API keys this API answers "
                        "only requests addressed to localhost, 127.0.0.1 or [::1]; configure "
                        "keys (`bolab keys add`) to serve it under other names"
                    },
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: the headers above on every answer; a policy a route set stays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope["path"] == "/ui" or scope["path"].startswith("/ui/")
        policy = UI_POLICY if page else API_POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Content-Security-Policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)
