"""Dependencies shared by the routes: the hub of the running app, and the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request
from starlette.requests import HTTPConnection

from .errors import Invalid
from .hub import Hub
from .schemas import STREAM_ID
from .sharded import ShardedHub

DEFAULT_TENANT = "default"


AnyHub = Hub | ShardedHub  # one process, or shards


async def get_hub(connection: HTTPConnection) -> AnyHub:  # async: no threadpool hop
    return connection.app.state.hub


def tenant_of(connection: HTTPConnection) -> str:
    """The tenant the caller acts for (one, ``default``, while no API keys are configured)."""
    return getattr(connection.state, "tenant", DEFAULT_TENANT)


async def get_tenant(connection: HTTPConnection) -> str:  # async: no threadpool hop
    return tenant_of(connection)


HubDep = Annotated[AnyHub, Depends(get_hub)]
Tenant = Annotated[str, Depends(get_tenant)]
StreamId = Annotated[str, Path(pattern=STREAM_ID, description="letters, digits, '.', '_', '-'; at most 128")]


async def known_query(request: Request) -> None:  # async: no threadpool hop
    """Refuse a query parameter the route does not take (a 422 naming it and those it takes): a guessed one,
    ``?since=5`` where only ``limit`` exists, would otherwise be ignored and its answer taken for what was
    asked."""
    if not request.query_params:
        return
    known = _query_names(request.scope["route"])
    for name in request.query_params:
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise Invalid(
                ("query", name), f"unknown query parameter {name!r} (this endpoint takes: {takes})", "extra_forbidden"
            )


def _query_names(route: Any) -> frozenset[str]:
    """The query parameters the route's handler and its dependencies declare (found once, kept on the route:
    routes are not hashable)."""
    known = getattr(route, "tbptt_query_names", None)
    if known is not None:
        return known
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(field.alias for field in dependant.query_params)
        pending.extend(dependant.dependencies)
    route.tbptt_query_names = frozenset(names)
    return route.tbptt_query_names
