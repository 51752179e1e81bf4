"""API keys and tenants: who is calling, and which tenant's streams they see.

Keys come from ``TBPTT_API_KEYS`` (``tenant:key,tenant:key``) and ``TBPTT_API_KEYS_FILE`` (one pair per line).
Every ``/v1`` route and WebSocket needs ``Authorization: Bearer <key>``; browsers cannot set headers on a
WebSocket, so there the key may instead ride as a subprotocol: ``new WebSocket(url, ["tbptt", "bearer." + key])``
(the server answers with ``tbptt``, never echoing the key). Keys are looked up by their SHA-256 and confirmed
with a constant-time comparison, and never logged. ``/healthz``, ``/readyz``, ``/metrics`` (no per-stream or
per-tenant labels) and the docs stay open. Without keys every caller is the tenant ``default``: the service
then refuses to listen beyond loopback unless ``TBPTT_TRUST_NETWORK`` says the network is trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from starlette import status
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import Settings

if TYPE_CHECKING:
    from .places import Places

log = logging.getLogger(__name__)

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SUBPROTOCOL, KEY_PREFIX = "tbptt", "bearer."


class InvalidKeys(ValueError):
    """TBPTT_API_KEYS or TBPTT_API_KEYS_FILE cannot be read; the message names the entry (never the key)."""


class Keys:
    def __init__(self, pairs: dict[str, str]) -> None:
        """``pairs``: key -> tenant."""
        self._by_digest = {hashlib.sha256(k.encode()).digest(): (k, t) for k, t in pairs.items()}

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        text = settings.api_keys.replace(",", "\n")
        if settings.api_keys_file is not None:
            try:
                text += "\n" + Path(settings.api_keys_file).read_text()
            except OSError as exc:
                raise InvalidKeys(f"TBPTT_API_KEYS_FILE: {exc}") from exc
        pairs: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            tenant, sep, key = line.partition(":")
            if not sep or not TENANT.match(tenant) or len(key) < 16:
                raise InvalidKeys(f"API key entry {number}: expected tenant:key with a key of 16+ characters")
            pairs[key] = tenant
        return cls(pairs)

    def secrets(self) -> list[str]:
        """The keys themselves, for the log filter that redacts them (never for anything else)."""
        return [key for key, _ in self._by_digest.values()]

    def tenants(self) -> set[str]:
        return {tenant for _, tenant in self._by_digest.values()}

    def tenant(self, key: str) -> str | None:
        found = self._by_digest.get(hashlib.sha256(key.encode()).digest())
        if found is not None and hmac.compare_digest(found[0].encode(), key.encode()):
            return found[1]
        return None


def check_exposure(settings: Settings, keys: Keys, host: str) -> None:
    """Refuse to listen beyond loopback without keys, unless told the network is trusted."""
    if keys:
        return
    if _loopback(host):
        log.warning("no API keys configured: every caller is the tenant 'default' (listening on %s only)", host)
        return
    if not settings.trust_network:
        raise SystemExit(
            f"refusing to listen on {host} without API keys: set TBPTT_API_KEYS (tenant:key,...) or, "
            "on a trusted network, TBPTT_TRUST_NETWORK=true"
        )
    log.warning("no API keys on %s: TBPTT_TRUST_NETWORK says the network is trusted", host)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticate:
    """ASGI middleware: sets ``scope["state"]["tenant"]`` for /v1, or answers 401 (HTTP) or 403 (WebSocket);
    and holds each tenant to its ``places`` (service/places.py): beyond them 503 with Retry-After, or a
    WebSocket closed with 1013 (try again later)."""

    def __init__(self, app: ASGIApp, keys: Keys, places: Places | None = None) -> None:
        self.app, self.keys, self.places = app, keys, places

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        tenant = self._tenant(scope) if self.keys else "default"
        if tenant is None:
            await self._refuse(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        if self.places is None:
            await self.app(scope, receive, send)
            return
        refusal = self.places.refusal(tenant)
        if refusal is not None:
            await self._busy(tenant, refusal, scope, receive, send)
            return
        self.places.take(tenant)
        try:
            await self.app(scope, receive, send)
        finally:
            self.places.give_back(tenant)

    async def _busy(self, tenant: str, refusal: str, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # (a close reason is at most 123 bytes; a tenant's name at most 64)
            reason = f"{tenant}: too many connections (TBPTT_MAX_CONNECTIONS_PER_TENANT)"
            await refuse_websocket(scope, receive, send, reason, code=status.WS_1013_TRY_AGAIN_LATER)
            return
        detail = f"{refusal} (TBPTT_MAX_CONNECTIONS_PER_TENANT); try again shortly"
        await JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})(scope, receive, send)

    def _tenant(self, scope: Scope) -> str | None:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() == "bearer" and key:
            return self.keys.tenant(key.strip())
        if scope["type"] == "websocket":
            offered = [p.strip() for p in headers.get(b"sec-websocket-protocol", b"").decode("latin-1").split(",")]
            for protocol in offered:
                if protocol.startswith(KEY_PREFIX):
                    return self.keys.tenant(protocol[len(KEY_PREFIX) :])
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # accepted, then closed with the reason: a refused handshake is a bare
            await refuse_websocket(scope, receive, send, "a valid API key is required")  # 403 a browser hides
            return
        response = JSONResponse(
            {"detail": "a valid API key is required (Authorization: Bearer <key>)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


async def refuse_websocket(
    scope: Scope, receive: Receive, send: Send, reason: str, code: int = status.WS_1008_POLICY_VIOLATION
) -> None:
    """Close a WebSocket with ``code`` (1008: policy violation) and ``reason``. Accepted first: a handshake
    refused with 403 reaches a browser's script as 1006 with no reason at all."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": subprotocol(scope)})
    await send({"type": "websocket.close", "code": code, "reason": reason})


def subprotocol(scope: Scope) -> str | None:
    """The subprotocol to answer a browser that sent its key as one (never the key itself)."""
    for name, value in scope["headers"]:
        if name == b"sec-websocket-protocol":
            offered = [p.strip() for p in value.decode("latin-1").split(",")]
            return SUBPROTOCOL if SUBPROTOCOL in offered else None
    return None
