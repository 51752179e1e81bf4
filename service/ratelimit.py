"""Per-tenant request rate: a token bucket per tenant; beyond it, 429 with Retry-After. Off when rate is 0.

A throttled request (or WebSocket connection) is answered only when its retry time comes, and a tenant's
throttled requests one per 1/rate seconds (each at most a second later): a client that floods without
waiting then waits on its own connections, instead of costing the event loop a rejection per request,
which is what would slow the other tenants down. (Held only until a token was due, 32 connections
flooding a 100/s tenant drew 3,000 429s a second, and another tenant's p99 doubled.)
"""

from __future__ import annotations

import asyncio
import math
import time

from starlette import status
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_HOLD = 1.0  # seconds a throttled request is held before its 429


class RateLimit:
    """ASGI middleware after authentication: counts /v1 requests and WebSocket connections per tenant."""

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app, self.rate, self.burst = app, rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self._held: dict[str, float] = {}  # tenant -> when its last throttled request is answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tenant = scope.get("state", {}).get("tenant")
        if not self.rate or tenant is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        wait = self._take(tenant)
        if not wait:
            await self.app(scope, receive, send)
            return
        await asyncio.sleep(self._hold(tenant, wait))  # (a socket that reconnects in a loop is held alike)
        if scope["type"] == "websocket":
            await send(
                {
                    "type": "websocket.close",
                    "code": status.WS_1013_TRY_AGAIN_LATER,
                    "reason": "rate limit: try again later",
                }
            )
        else:
            retry = str(max(1, math.ceil(wait)))
            body = {"detail": f"rate limit of {self.rate:g} requests/s exceeded; retry in {retry} s"}
            await JSONResponse(body, status_code=429, headers={"Retry-After": retry})(scope, receive, send)

    def _take(self, tenant: str) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        tokens, at = self._buckets.get(tenant, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[tenant] = (tokens - 1, now)
            return 0.0
        self._buckets[tenant] = (tokens, now)
        return (1 - tokens) / self.rate

    def _hold(self, tenant: str, wait: float) -> float:
        """Seconds to hold a throttled request: until a token is due, and 1/rate after the tenant's last
        throttled one, at most MAX_HOLD."""
        now = time.monotonic()
        until = min(max(now + wait, self._held.get(tenant, now) + 1 / self.rate), now + MAX_HOLD)
        self._held[tenant] = until
        return until - now
