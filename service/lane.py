"""The fast lane: ``POST /v1/streams/{stream_id}/observations``, the route a sensor calls once per reading,
handed straight to its handler past FastAPI's router.

Profiled under 16 connections of one-observation POSTs (py-spy, GIL held, 2026-12-04), the event loop held
the interpreter three times as long as the engine thread, and less than a fifth of the loop's time was the
handler: the rest was matching the request against the routers, FastAPI's dependency solving (the path
parameter's validation) and the layers around them. The lane runs inside every middleware of the app (keys,
rate limits, body limits, the browser guard and the request metrics all apply as before) and calls the
same handler with the same exception handlers; it only takes the requests whose path and id FastAPI would
route there and accept, and leaves every other request (an invalid id included, for FastAPI's own 422) to
the app. A request with a query string goes to the app as well, which refuses what the route does not take.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .schemas import STREAM_ID

PATH = "/v1/streams/{stream_id}/observations"
_MATCH = re.compile(
    PATH.replace("{stream_id}", "(" + STREAM_ID.strip("^$") + ")")
).fullmatch  # (PATH has no other regex characters)

Handler = Callable[[str, Request], Awaitable[Response]]


class ObservationLane:
    """ASGI middleware, the innermost of the app's: the lane's requests go to ``handler``, others to ``app``."""

    def __init__(self, app: ASGIApp, route: APIRoute, handlers: Mapping[Any, Callable]) -> None:
        self.app, self.route = app, route
        self.handler: Handler = route.endpoint
        # The app's exception handlers, as its router's requests get them (errors.install's JSON details).
        self.direct = ExceptionMiddleware(self._handle, handlers=dict(handlers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not scope["query_string"]
        ):
            match = _MATCH(scope["path"])
            if match:
                scope["route"], scope["endpoint"] = self.route, self.handler  # as the router sets them
                scope["path_params"] = {"stream_id": match[1]}
                await self.direct(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(scope["path_params"]["stream_id"], Request(scope, receive, send))
        await response(scope, receive, send)


def lane_route(routes: list) -> APIRoute:
    """The app's route the lane stands in for."""
    for route in routes:
        if isinstance(route, APIRoute) and route.path == PATH and "POST" in (route.methods or ()):
            return route
    raise LookupError(f"no POST {PATH} route")
