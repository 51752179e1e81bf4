"""A stream's model as a safetensors file: torch.nn names, the complete config as JSON metadata."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..deps import HubDep, StreamId, Tenant
from ..schemas import StreamPublic

SAFETENSORS = "application/octet-stream"
router = APIRouter(prefix="/v1/streams", tags=["model"])

BINARY = {"schema": {"type": "string", "format": "binary"}}
BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {SAFETENSORS: BINARY},
        "description": "a safetensors file, as GET .../model returns",
    }
}


@router.get("/{stream_id}/model", response_class=Response, responses={200: {"content": {SAFETENSORS: BINARY}}})
async def get_model(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> Response:
    """Export the weights (safetensors; loads into torch.nn.GRU/LSTM/RNN + Linear)."""
    data = await hub.export_model(tenant, stream_id)
    disposition = f'attachment; filename="{stream_id}.safetensors"'
    return Response(data, media_type=SAFETENSORS, headers={"Content-Disposition": disposition})


@router.put(
    "/{stream_id}/model", response_model=StreamPublic, openapi_extra=BINARY_BODY,
    responses={413: {"description": "the file is larger than TBPTT_MAX_MODEL_BYTES"}},
)  # fmt: skip
async def put_model(stream_id: StreamId, request: Request, hub: HubDep, tenant: Tenant) -> StreamPublic:
    """Import weights (names, shapes, dtype and finiteness checked); optimizer and hidden state reset."""
    data = await request.body()
    return StreamPublic.of(await hub.import_model(tenant, stream_id, data))
