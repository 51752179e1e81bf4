"""Streams: create, read, list, delete, reset; their recent predictions and their metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from .. import limits
from ..deps import HubDep, StreamId, Tenant
from ..errors import Invalid
from ..fastjson import reply
from ..schemas import ResetRequest, StreamConfig, StreamInfo, StreamList, StreamMetrics, StreamResults

router = APIRouter(prefix="/v1/streams", tags=["streams"])


@router.put(
    "/{stream_id}",
    response_model=StreamInfo,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": StreamInfo, "description": "Exists with the same config"},
        409: {"description": "Exists with another config"},
    },
)
async def put_stream(
    stream_id: StreamId, config: StreamConfig, hub: HubDep, tenant: Tenant, response: Response
) -> StreamInfo:
    """Create a stream (201), or confirm one with the same config (200)."""
    try:
        core = config.to_core()
    except ValueError as exc:  # a rule across fields the schema cannot express
        raise Invalid(["body"], str(exc)) from exc
    limits.check_model(core, hub.settings)
    info, created = await hub.call(hub.create, tenant, stream_id, core)
    if not created:
        response.status_code = status.HTTP_200_OK
    return info


@router.get("", response_model=StreamList)
async def list_streams(hub: HubDep, tenant: Tenant) -> StreamList:
    """List the streams."""
    return StreamList(streams=await hub.call(hub.list, tenant))


@router.get("/{stream_id}", response_model=StreamInfo)
async def get_stream(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> StreamInfo:
    """Read a stream: its complete config and counters."""
    return await hub.call(hub.info, tenant, stream_id)


@router.delete("/{stream_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_stream(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> None:
    """Delete a stream, its model, log and checkpoints."""
    await hub.call(hub.delete, tenant, stream_id)


@router.post("/{stream_id}/reset", response_model=StreamInfo)
async def reset_stream(
    stream_id: StreamId, hub: HubDep, tenant: Tenant, body: ResetRequest | None = None
) -> StreamInfo:
    """Reset the hidden state and/or the weights (with a fresh optimizer)."""
    body = body or ResetRequest()
    return await hub.call(hub.reset, tenant, stream_id, body.hidden, body.weights)


@router.get("/{stream_id}/predictions", response_model=StreamResults)
async def get_predictions(
    stream_id: StreamId,
    hub: HubDep,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=10_000, description="how many, the most recent")] = 100,
) -> Response:
    """The most recent results, oldest first."""
    return reply({"stream": stream_id, "results": await hub.call(hub.predictions, tenant, stream_id, limit)})


@router.get("/{stream_id}/metrics", response_model=StreamMetrics)
async def get_metrics(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> StreamMetrics:
    """Counters, losses and prequential errors of the stream."""
    return await hub.call(hub.metrics, tenant, stream_id)
