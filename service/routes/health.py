"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import HubDep
from ..engine_thread import RECOVERING_RETRY_AFTER
from ..schemas import Status
from ..sharded import ShardedHub
from ..telemetry import Exposition

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status, responses={503: {"model": Status}})
async def get_health(hub: HubDep) -> Response:
    """Alive: 503 once the engine has failed (only a restart helps), so that orchestrators restart it."""
    if hub.failure is not None:
        return JSONResponse({"status": "failed"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=Status, responses={503: {"model": Status}})
async def get_ready(hub: HubDep) -> Response:
    """The engine and the store are ready (503 while recovering, with Retry-After, or if the engine failed).
    A sharded server: every shard is (``shards`` says which are, while one restarts); with several fronts,
    ``front`` is the one that answered."""
    shards: dict = {}
    if isinstance(hub, ShardedHub):
        shards = {"shards": hub.shard_status(), **({"front": hub.joined.front} if hub.joined else {})}
    if hub.ready and hub.failure is None:
        return JSONResponse({"status": "ok", **shards})
    if hub.failure is not None:
        return JSONResponse({"status": "failed", **shards}, status_code=503)
    headers = {"Retry-After": str(RECOVERING_RETRY_AFTER)}
    return JSONResponse({"status": "starting", **shards}, status_code=503, headers=headers)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def get_metrics(request: Request) -> Response:
    """Prometheus text format; no per-stream labels. A sharded server: the streams' series per shard (the
    label ``shard``), the HTTP series of this front."""
    hub = request.app.state.hub
    if isinstance(hub, ShardedHub):
        return Response(generate_latest(Exposition(await hub.metric_families())), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(request.app.state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
