"""Dependencies shared by the routes: the hub of the running app, and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from starlette.requests import HTTPConnection

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
