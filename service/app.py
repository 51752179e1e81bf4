"""The FastAPI application factory: ``create_app(settings)``; nothing heavy happens at import."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException  # the base class: FastAPI raises both kinds
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import errors, fastjson, limits
from .auth import Authenticate, Keys
from .browser import BrowserGuard
from .deps import known_query
from .gcpolicy import park_long_lived
from .hub import Hub
from .lane import ObservationLane, lane_route
from .places import tenant_places
from .ratelimit import RateLimit
from .routes import anomalies, dashboard, health, model, observations, streams, templates
from .settings import Settings
from .sharded import Joined, ShardedHub
from .telemetry import Telemetry
from .ws import router as ws_router

log = logging.getLogger(__name__)

DESCRIPTION = """Streaming online learning: every stream has its own recurrent model (RNN, GRU, LSTM) that
predicts each observation before learning from it, by exact truncated backpropagation through time."""


def create_app(settings: Settings | None = None, joined: Joined | None = None) -> FastAPI:
    """The app; ``joined``: a front of several, whose shards the serving process started (``--workers``)."""
    settings = settings or Settings()
    telemetry = Telemetry(None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = ShardedHub(settings, telemetry, joined) if settings.shards else Hub(settings, telemetry)
        app.state.hub = hub
        hub.start()
        if isinstance(hub, ShardedHub) and hub.joined is not None:
            await hub.joining(settings.shutdown_timeout)  # (meanwhile the other fronts take the connections)
        # A full GC pass over torch's, FastAPI's and pydantic's objects took ~80 ms with the GIL held, which
        # showed as the p99 of every request; over the streams' objects, a fifth of the time under load.
        park_long_lived(sharded=isinstance(hub, ShardedHub))
        try:
            yield
        finally:
            await hub.stop(time_left_to_stop(app, settings))

    keys = Keys.from_settings(settings)
    app = FastAPIOffline(  # /docs and /redoc with their scripts served from the package: no CDN, works offline
        title="tbptt-service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.telemetry = telemetry
    errors.install(app)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # e.g. not UTF-8
            detail = [{"loc": ["body"], "msg": "the body is not valid UTF-8 JSON", "type": "json_invalid"}]
            return JSONResponse({"detail": detail}, status_code=422)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette lists the first matching route's methods only
            headers["Allow"] = ", ".join(_methods_for(app, request.url.path))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    # The hot router first: FastAPI tries routes in order, and matching is a real share of a small request.
    routers = (
        observations.router,
        streams.router,
        model.router,
        health.router,
        anomalies.router,
        templates.router,
        ws_router,
        dashboard.router,
    )
    # The API's own routes refuse query parameters they do not take (deps.known_query); the health checks, the
    # sockets and the dashboard's page are left as they were.
    unchecked = (health.router, ws_router, dashboard.router)
    for router in routers:
        app.include_router(router, dependencies=None if router in unchecked else [Depends(known_query)])
    _document(app, settings)
    # Innermost: sensors' one-observation POSTs go past FastAPI's router, inside every middleware below.
    app.add_middleware(ObservationLane, route=lane_route(observations.router.routes), handlers=app.exception_handlers)
    app.add_middleware(RateLimit, rate=settings.rate_limit, burst=settings.rate_burst)
    app.add_middleware(Authenticate, keys=keys, places=tenant_places(settings, keys))
    app.add_middleware(BrowserGuard, settings=settings, keyless=not keys)
    app.add_middleware(limits.BodyLimit, settings=settings)
    origins = [o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip()]
    if origins:  # pages on these origins may call the API (preflights answered before keys are asked for)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After", "Content-Disposition"],
            max_age=600,
        )
    if joined is not None:
        app.add_middleware(FrontHeader, front=joined.front)
    app.add_middleware(RequestMetrics, telemetry=telemetry)  # added last: runs first
    return app


def time_left_to_stop(app: FastAPI, settings: Settings) -> float:
    """What the shutdown timeout leaves for the final checkpoints: it bounds the whole stop, the connections'
    draining included (``stopping_since``: set when the server began to stop), as an orchestrator's grace
    period does before it kills. At least a second: a checkpoint cut short is replayed from the log."""
    since = getattr(app.state, "stopping_since", None)
    spent = 0.0 if since is None else time.monotonic() - since
    return max(settings.shutdown_timeout - spent, 1.0)


def _methods_for(app: FastAPI, path: str) -> list[str]:
    """Every method some route offers for ``path``."""
    methods: set[str] = set()
    todo = list(app.router.routes)
    while todo:
        route = todo.pop()
        if hasattr(route, "original_router"):  # an included router
            todo += route.original_router.routes
        elif isinstance(route, Route | APIRoute) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)


DETAIL = {"application/json": {"schema": {"$ref": "#/components/schemas/Detail"}}}
ERRORS = {  # what any /v1 operation may answer besides its own
    "401": "No valid API key (Authorization: Bearer <key>)",
    "403": "A limit on streams is reached",
    "404": "No such stream for this tenant",
    "409": "The stream exists with another config; or an observation reuses a seq with other values, or its "
    "ts is not after the stream's last",
    "413": "The body is too large",
    "422": "Invalid input, naming the field",
    "429": "Too many requests from this tenant; see Retry-After",
    "503": "Starting, shutting down, or too many connections",
    "507": "Storage full: nothing was applied",
}


def _document(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI document: bodies validated from raw bytes (fastjson) are not seen by FastAPI, so their
    schemas are added; the configured limits replace the schema's defaults; the bearer scheme is declared."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(fastjson.SCHEMAS)
            limits.document(components["schemas"], settings)
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            components["schemas"]["Detail"] = {
                "type": "object", "properties": {"detail": {}}, "required": ["detail"], "title": "Detail"
            }  # fmt: skip
            for path, operations in schema["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
                        responses = operation.setdefault("responses", {})
                        for status, description in ERRORS.items():
                            responses.setdefault(status, {"description": description, "content": DETAIL})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class RequestMetrics:
    """Counts and times HTTP requests by route template (``/v1/streams/{stream_id}``), never by raw path."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app, self.telemetry = app, telemetry
        self._children: dict[tuple[str, str, int], tuple] = {}  # .labels() costs a lookup per call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            key = (scope["method"], getattr(scope.get("route"), "path", "unmatched"), status[0])
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    self.telemetry.requests.labels(key[0], key[1], str(key[2])),
                    self.telemetry.latency.labels(key[0], key[1]),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


class FrontHeader:
    """A server with several fronts: every answer, and every WebSocket's acceptance, says which front it is
    (``X-Tbptt-Front``), for whoever debugs a connection."""

    def __init__(self, app: ASGIApp, front: int) -> None:
        self.app, self.header = app, (b"x-tbptt-front", str(front).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_header(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_header)
