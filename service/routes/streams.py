"""Streams: create, read, list, delete, reset; their recent predictions and their metrics."""

from __future__ import annotations

import csv
import io
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import StringConstraints

from tbptt.models import InvalidConfig

from .. import limits
from ..deps import HubDep, StreamId, Tenant
from ..errors import Invalid
from ..fastjson import JSONBody, reply
from ..patching import completed
from ..results import Observed
from ..schemas import (
    LABEL_FILTER,
    MAX_LABELS,
    STREAM_ID,
    HistoryPublic,
    MetricsPublic,
    StreamCreate,
    StreamCreated,
    StreamPatched,
    StreamPublic,
    StreamReset,
    StreamsCreate,
    StreamsCreated,
    StreamsPublic,
)
from ..shard import MAX_REPLY_VALUES

router = APIRouter(prefix="/v1/streams", tags=["streams"])
DEFAULT_PAGE, MAX_PAGE = 100, 1000
CSV_EXAMPLE = (
    "seq,step,ts,x_0,y_0,prediction_0,lower_0,upper_0,loss,updated,anomaly,anomalous\n"
    "17,17,2026-12-02T10:00:00Z,21.4,,21.1,20.2,22.0,0.045,false,0.61,false\n"
)


def history_csv(history: list[Observed], input_size: int, output_size: int) -> str:
    """CSV of kept results (``CSV_EXAMPLE``'s columns, one per input, output and bound)."""
    outputs = range(output_size)
    header = ["seq", "step", "ts", *(f"x_{i}" for i in range(input_size)), *(f"y_{o}" for o in outputs)]
    header += [*(f"prediction_{o}" for o in outputs), *(f"{b}_{o}" for o in outputs for b in ("lower", "upper"))]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "loss", "updated", "anomaly", "anomalous"])
    blank: list[Any] = [""] * max(input_size, 2 * output_size)
    for r in history:
        band = r["interval"]
        writer.writerow([
            r["seq"], r["step"], r["ts"] or "", *(r["x"] or blank[:input_size]),
            *(r["y"] or blank[:output_size]), *(r["prediction"] or blank[:output_size]),
            *([bound for pair in band for bound in pair] if band else blank[: 2 * output_size]),
            "" if r["loss"] is None else r["loss"], str(r["updated"]).lower(),
            "" if r["anomaly"] is None else r["anomaly"], "" if r["anomalous"] is None else str(r["anomalous"]).lower(),
        ])  # fmt: skip
    return out.getvalue()


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
    info, created = await hub.create(tenant, stream_id, core, config.labels)
    if not created:
        response.status_code = status.HTTP_200_OK
    return StreamPublic.of(info)


@router.post("", response_model=StreamsCreated)
async def create_streams(body: StreamsCreate, hub: HubDep, tenant: Tenant) -> StreamsCreated:
    """Create many streams in one request (a fleet's worth): each item is an id and a stream's PUT body,
    merged over the tenant's template if it has one. Validated whole, and conflicts (another config or labels)
    and quotas checked for all, before any is created."""
    template = await hub.template(tenant)
    streams, seen = [], set()
    for k, item in enumerate(body.streams):
        loc = ("body", "streams", k)
        stream_id = item.get("id")
        if not isinstance(stream_id, str) or not re.fullmatch(STREAM_ID, stream_id):
            raise Invalid([*loc, "id"], f"each stream needs an id matching {STREAM_ID}")
        if stream_id in seen:
            raise Invalid([*loc, "id"], f"stream {stream_id!r} is named twice")
        seen.add(stream_id)
        spec = completed(template, {key: value for key, value in item.items() if key != "id"}, loc)
        try:
            core = spec.to_core()
        except InvalidConfig as exc:
            raise limits.invalid_config(exc, loc) from exc
        limits.check_model(core, hub.settings, loc)
        streams.append((stream_id, core, spec.labels))
    created = await hub.create_many(tenant, streams)
    return StreamsCreated(streams=[StreamCreated(**vars(StreamPublic.of(info)), created=new) for info, new in created])


@router.get("", response_model=StreamsPublic)
async def list_streams(
    hub: HubDep,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="streams per page")] = DEFAULT_PAGE,
    cursor: Annotated[
        str | None, Query(pattern=STREAM_ID, description="the previous page's next (opaque: pass it as it is)")
    ] = None,
    prefix: Annotated[str, Query(max_length=128, description="only ids that start with this")] = "",
    label: Annotated[
        list[Annotated[str, StringConstraints(pattern=LABEL_FILTER)]] | None,
        Query(max_length=MAX_LABELS, description="key:value, or key for any value; repeated: every one must match"),
    ] = None,
) -> StreamsPublic:
    """List the streams by id, a page at a time: a stream that exists throughout is on exactly one page,
    whatever is created or deleted meanwhile."""
    wanted = {key: value if sep else None for key, sep, value in (item.partition(":") for item in label or [])}
    infos, after, total = await hub.streams(tenant, limit, cursor, prefix, wanted)
    return StreamsPublic(streams=[StreamPublic.of(info) for info in infos], next=after, total=total)


@router.get("/{stream_id}", response_model=StreamPublic)
async def get_stream(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> StreamPublic:
    """Read a stream: its complete config and counters."""
    return StreamPublic.of(await hub.info(tenant, stream_id))


PATCH_BODY = JSONBody(
    dict[str, Any],
    "StreamPatch",
    [{"optimizer": {"lr": 0.001}}, {"labels": {"site": "south"}, "anomaly_threshold": 0.99}, {"clip_grad_norm": None}],
)


@router.patch(
    "/{stream_id}",
    response_model=StreamPatched,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media: {"schema": {"$ref": "#/components/schemas/StreamPatch"}}
                for media in ("application/merge-patch+json", "application/json")
            },
        }
    },
    responses={409: {"description": "It would change what a live stream cannot change (sizes, cell, ...)"}},
)
async def patch_stream(stream_id: StreamId, hub: HubDep, tenant: Tenant, request: Request) -> StreamPatched:
    """Change a live stream: a JSON merge patch (RFC 7396) of its config as GET shows it (null: back to the
    default). What may change: the optimizer's settings (not its name), clip_grad_norm, loss, anomaly and
    interval settings, timestamps and labels; logged and durable like observations, applied from the step
    the reply names."""
    changes = await PATCH_BODY.parse(request)
    info, effective = await hub.patch(tenant, stream_id, changes)
    return StreamPatched(**vars(StreamPublic.of(info)), effective_from_step=effective)


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


HistoryLimit = Annotated[
    int | None,
    Query(
        ge=1,
        le=10_000,
        description=f"how many, the most recent (default: 100, or as many as fit in {MAX_REPLY_VALUES:,} values)",
    ),
]


@router.get("/{stream_id}/predictions", response_model=HistoryPublic)
async def get_predictions(stream_id: StreamId, hub: HubDep, tenant: Tenant, limit: HistoryLimit = None) -> Response:
    """The most recent results with their observations (ts, x, y), oldest first. A reply carries at most
    262,144 values (limit x each result's: x, y, prediction, interval and forecasts): a larger one would hold
    up everyone's requests while it is encoded."""
    return reply({"stream": stream_id, "results": await hub.predictions(tenant, stream_id, limit)})


@router.get(
    "/{stream_id}/predictions.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"example": CSV_EXAMPLE}}, "description": "One row per result"}},
)
async def get_predictions_csv(stream_id: StreamId, hub: HubDep, tenant: Tenant, limit: HistoryLimit = None) -> Response:
    """``/predictions`` as CSV, for a spreadsheet or pandas: one row per result, oldest first; a column per
    input (x_0 ...), target (y_0 ...), prediction and interval bound; empty cells where there is none."""
    info = await hub.info(tenant, stream_id)
    history = await hub.predictions(tenant, stream_id, limit)
    assert info.config.output_size is not None
    return Response(
        history_csv(history, info.config.input_size, info.config.output_size),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="{stream_id}-predictions.csv"'},
    )


@router.get("/{stream_id}/metrics", response_model=MetricsPublic)
async def get_metrics(stream_id: StreamId, hub: HubDep, tenant: Tenant) -> MetricsPublic:
    """Counters, losses and prequential errors of the stream."""
    return MetricsPublic.of(*await hub.metrics(tenant, stream_id))
