"""A stream's model as a safetensors file: torch.nn names, the complete config as JSON metadata."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..deps import HubDep, StreamId, Tenant
from ..schemas import StreamInfo

SAFETENSORS = "application/octet-stream"
BINARY = {"schema": {"type": "string", "format": "binary"}}
BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {SAFETENSORS: BINARY},
        "description": "a safetensors file, as GET .../model returns",
    }
}


async def get_model(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> Response:
    """Export the weights (safetensors; loads into torch.nn.GRU/LSTM/RNN + Linear)."""
    data = await hub.call(hub.export_model, tenant, stream_id)
    disposition = f'attachment; filename="{stream_id}.safetensors"'
    return Response(data, media_type=SAFETENSORS, headers={"Content-Disposition": disposition})


async def put_model(stream_id: StreamId, request: Request, hub: HubDep, tenant: Tenant) -> StreamInfo:
    """Import weights (names, shapes, dtype and finiteness checked); optimizer and hidden state reset."""
    data = await request.body()
    return await hub.call(hub.import_model, tenant, stream_id, data)


router = APIRouter(prefix="/v1/streams", tags=["model"])
router.add_api_route(
    "/{stream_id}/model", get_model, methods=["GET"], response_class=Response,
    responses={200: {"content": {SAFETENSORS: BINARY}}},
)  # fmt: skip
router.add_api_route(
    "/{stream_id}/model", put_model, methods=["PUT"], response_model=StreamInfo, openapi_extra=BINARY_BODY,
    responses={413: {"description": "the file is larger than TBPTT_MAX_MODEL_BYTES"}},
)  # fmt: skip
