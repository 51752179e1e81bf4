"""The stack's floor: bare FastAPI endpoints that validate the same bodies as the service and answer a
constant (HTTP), or echo (WebSocket). ``uvicorn bench.bare:app``"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from tbptt.service.schemas import STREAM_ID, CrossStreamBatch, Observation, ObservationBatch

app = FastAPI()
CONSTANT = {"stream": "s", "results": [{"seq": 1, "step": 1, "prediction": [0.0], "loss": None, "updated": False,
                                        "duplicate": False}]}  # fmt: skip


@app.post("/v1/streams/{stream_id}/observations")
async def post_observations(stream_id: str, body: Observation | ObservationBatch) -> dict:
    assert STREAM_ID
    return CONSTANT


@app.post("/v1/observations")
async def post_cross_stream(body: CrossStreamBatch) -> dict:
    return CONSTANT


@app.websocket("/v1/streams/{stream_id}/ws")
async def echo(websocket: WebSocket, stream_id: str) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return
