"""Web pages must not use the API on a visitor's behalf.

A page on any site can send a browser to this service: forms and ``text/plain`` POSTs need no permission
from us, and a page whose name resolves to 127.0.0.1 (DNS rebinding) is "same origin" to the browser. So:

- JSON routes take JSON only: a body declared as anything else (a form, ``text/plain``) is 415.
- Without API keys (the loopback default, where nothing else stops a page): a Host header that is not one
  of this server's names is 400, and a request from another Origin than the service's own (or those in
  ``TBPTT_ALLOWED_ORIGINS``) is 403. With keys, a page cannot send the key unless CORS lets it (only the
  origins listed in ``TBPTT_ALLOWED_ORIGINS`` get CORS: service/app.py), so these two checks are not needed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
JSON_METHODS = {"POST", "PUT", "PATCH"}


def origin_allowed(origin: str | None, host: str | None, allowed: str) -> bool:
    """Browsers send Origin: allow our own, and those listed in ``allowed`` (TBPTT_ALLOWED_ORIGINS; "*":
    any). Clients that send none (not a browser) are not subject to it."""
    if origin is None:
        return True
    listed = {o.strip().rstrip("/") for o in allowed.split(",") if o.strip()}
    if "*" in listed or origin.rstrip("/") in listed:
        return True
    return urlsplit(origin).netloc == host


def host_name(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    return urlsplit(f"//{host}").hostname or ""


class BrowserGuard:
    def __init__(self, app: ASGIApp, settings: Settings, keyless: bool) -> None:
        self.app, self.settings, self.keyless = app, settings, keyless
        names = [*LOOPBACK_NAMES, settings.host, *settings.allowed_hosts.split(",")]
        self.hosts = {name.strip().lower() for name in names if name.strip()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope, Headers(scope=scope))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        if scope["method"] in JSON_METHODS and not scope["path"].endswith("/model"):  # model uploads: bytes
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind and kind != "application/json" and not kind.endswith("+json"):
                return 415, f"the body must be JSON (Content-Type: application/json), not {kind}"
        if not self.keyless:
            return None
        host = headers.get("host", "")
        if host_name(host).lower() not in self.hosts:
            return 400, (
                f"unexpected Host {host[:100]!r}: without API keys only this server's own names are accepted "
                "(DNS rebinding); add yours to TBPTT_ALLOWED_HOSTS, or set TBPTT_API_KEYS"
            )
        if not origin_allowed(headers.get("origin"), host, self.settings.allowed_origins):
            return 403, "requests from other origins are refused without API keys (TBPTT_ALLOWED_ORIGINS)"
        return None
