"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import HubDep
from ..schemas import Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status)
async def get_health() -> Status:
    """The process is alive and serving."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"model": Status}})
async def get_ready(hub: HubDep) -> Response:
    """The engine and the store are ready (503 while recovering, or if the engine failed)."""
    if hub.ready and hub.failure is None:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "failed" if hub.failure else "starting"}, status_code=503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def get_metrics(request: Request) -> Response:
    """Prometheus text format; no per-stream labels."""
    return Response(generate_latest(request.app.state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
