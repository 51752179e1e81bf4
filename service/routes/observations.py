"""Observations: one or a batch for a stream, or many streams in one request (for gateways)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import Discriminator, Tag

from .. import limits
from ..deps import AnyHub, StreamId, tenant_of
from ..fastjson import JSONBody, reply
from ..ingest import Incoming, Part
from ..schemas import CrossStreamBatch, CrossStreamResults, Observation, ObservationBatch, StreamResults

router = APIRouter(tags=["observations"])

ONE, MANY = "single-observation", "observation-batch"  # tags of the body union, stripped from errors


def _kind(body: Any) -> str:
    return MANY if isinstance(body, dict) and "observations" in body else ONE


ObservationsIn = Annotated[
    Annotated[Observation, Tag(ONE)] | Annotated[ObservationBatch, Tag(MANY)], Discriminator(_kind)
]
STREAM_BODY = JSONBody(
    ObservationsIn, "ObservationsIn", [{"x": [0.5, 1.2, -0.3], "y": 2.0, "seq": 17}, {"observations": [{"x": 1.0}]}]
)
CROSS_BODY = JSONBody(CrossStreamBatch, "CrossStreamBatch", [{"observations": [{"stream": "a", "x": 1.0}]}])


# The hot paths take the hub and the tenant from the request rather than through Depends: FastAPI's
# dependency solving (cache keys, signature inspection) cost a measurable share of a one-observation request.


@router.post("/v1/streams/{stream_id}/observations", response_model=StreamResults, openapi_extra=STREAM_BODY.openapi)
async def post_observations(stream_id: StreamId, request: Request) -> Response:
    """Send one observation, or a batch applied in order; each answered with the prediction made before
    learning from it. A batch is checked whole first: one bad item and nothing is applied."""
    hub, tenant = request.app.state.hub, tenant_of(request)
    body = await STREAM_BODY.parse(request)
    return reply({"stream": stream_id, "results": await observe_stream(hub, tenant, stream_id, body)})


@router.post("/v1/observations", response_model=CrossStreamResults, openapi_extra=CROSS_BODY.openapi)
async def post_cross_stream(request: Request) -> Response:
    """Observations for many streams in one request, answered in request order; checked whole first."""
    hub, tenant = request.app.state.hub, tenant_of(request)
    body: CrossStreamBatch = await CROSS_BODY.parse(request)
    limits.check_batch(len(body.observations), hub.settings)
    parts = [
        Part(obs.stream, [Incoming(obs.x, obs.y, obs.seq, obs.learn, obs.ts)], ("body", "observations", i))
        for i, obs in enumerate(body.observations)
    ]
    results = await hub.observe_each(tenant, parts)
    return Response(b'{"results":' + results + b"}", media_type="application/json")


async def observe_stream(
    hub: AnyHub, tenant: str, stream: str, body: Observation | ObservationBatch, incarnation: int | None = None
) -> list:
    """Apply ``body`` to the stream (checked against it on the engine thread); shared by HTTP and WebSocket
    (which passes the ``incarnation`` of the stream it opened)."""
    if isinstance(body, ObservationBatch):
        limits.check_batch(len(body.observations), hub.settings)
        observations = [Incoming(o.x, o.y, o.seq, o.learn, o.ts) for o in body.observations]
        part = Part(stream, observations, ("body", "observations"), indexed=True, incarnation=incarnation)
    else:
        part = Part(stream, [Incoming(body.x, body.y, body.seq, body.learn, body.ts)], incarnation=incarnation)
    (results,) = await hub.observe(tenant, [part])
    return results
