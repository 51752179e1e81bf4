"""Streams: create, read, list, delete, reset; their recent predictions and their metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from tbptt.models import InvalidConfig

from .. import limits
from ..deps import HubDep, StreamId, Tenant
from ..fastjson import reply
from ..schemas import MetricsPublic, StreamCreate, StreamPublic, StreamReset, StreamResults, StreamsPublic
from ..shard import MAX_REPLY_VALUES

router = APIRouter(prefix="/v1/streams", tags=["streams"])


@router.put(
    "/{stream_id}",
    response_model=StreamPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": StreamPublic, "description": "Exists with the same config"},
        409: {"description": "Exists with another config"},
    },
)
async def put_stream(
    stream_id: StreamId, config: StreamCreate, hub: HubDep, tenant: Tenant, response: Response
) -> StreamPublic:
    """Create a stream (201), or confirm one with the same config (200)."""
    try:
        core = config.to_core()
    except InvalidConfig as exc:  # a rule across fields the schema cannot express
        raise limits.invalid_config(exc) from exc
    limits.check_model(core, hub.settings)
    info, created = await hub.create(tenant, stream_id, core)
    if not created:
        response.status_code = status.HTTP_200_OK
    return StreamPublic.of(info)


@router.get("", response_model=StreamsPublic)
async def list_streams(hub: HubDep, tenant: Tenant) -> StreamsPublic:
    """List the streams."""
    return StreamsPublic(streams=[StreamPublic.of(info) for info in await hub.streams(tenant)])


@router.get("/{stream_id}", response_model=StreamPublic)
async def get_stream(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> StreamPublic:
    """Read a stream: its complete config and counters."""
    return StreamPublic.of(await hub.info(tenant, stream_id))


@router.delete("/{stream_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_stream(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> None:
    """Delete a stream, its model, log and checkpoints."""
    await hub.delete(tenant, stream_id)


@router.post("/{stream_id}/reset", response_model=StreamPublic)
async def reset_stream(
    stream_id: StreamId, hub: HubDep, tenant: Tenant, body: StreamReset | None = None
) -> StreamPublic:
    """Reset the hidden state and/or the weights (with a fresh optimizer)."""
    body = body or StreamReset()
    return StreamPublic.of(await hub.reset(tenant, stream_id, body.hidden, body.weights))


@router.get("/{stream_id}/predictions", response_model=StreamResults)
async def get_predictions(
    stream_id: StreamId,
    hub: HubDep,
    tenant: Tenant,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=10_000,
            description=f"how many, the most recent (default: 100, or as many as fit in "
            f"{MAX_REPLY_VALUES:,} predicted values)",
        ),
    ] = None,
) -> Response:
    """The most recent results, oldest first. A reply carries at most 262,144 predicted values (limit x the
    stream's output_size): a larger one would hold up everyone's requests while it is encoded."""
    return reply({"stream": stream_id, "results": await hub.predictions(tenant, stream_id, limit)})


@router.get("/{stream_id}/metrics", response_model=MetricsPublic)
async def get_metrics(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> MetricsPublic:
    """Counters, losses and prequential errors of the stream."""
    return MetricsPublic.of(*await hub.metrics(tenant, stream_id))
