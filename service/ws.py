"""WebSockets: stream observations in, one reply per message; or watch a stream's results, or a tenant's
alerts.

Close codes: 1008 (policy: unknown stream), 1013 (try again later: a watcher too slow to keep up),
1001 (going away: the service shuts down).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError
from starlette import status
from starlette.websockets import WebSocketState

from tbptt.models import CoreError, StreamNotFound

from .alerts import openings_of
from .auth import subprotocol
from .browser import origin_allowed
from .deadline import moving_deadline
from .deps import AnyHub, HubDep, StreamId, Tenant
from .errors import LimitReached, ServiceError, StreamReplaced, status_and_detail, validation_errors
from .routes.anomalies import MAX_ALERTS
from .routes.observations import ObservationsIn, observe_stream
from .schemas import Observation, ObservationBatch
from .sharded import ShardedHub
from .streams import StreamInfo
from .watchers import GONE

log = logging.getLogger(__name__)
router = APIRouter()

NORMAL, GOING_AWAY = status.WS_1000_NORMAL_CLOSURE, status.WS_1001_GOING_AWAY
POLICY_VIOLATION, TOO_BIG, TRY_AGAIN_LATER = (
    status.WS_1008_POLICY_VIOLATION, status.WS_1009_MESSAGE_TOO_BIG, status.WS_1013_TRY_AGAIN_LATER,
)  # fmt: skip
# a sharded server's alerts watcher reads the feed when woken (new alerts, a shard lost or back), and at
# least this often: soon while a lagging shard holds alerts back, rarely otherwise (nothing is missed)
FEED_POLL_SECONDS, FEED_IDLE_SECONDS = 0.5, 10.0
MESSAGE: TypeAdapter[Observation | ObservationBatch] = TypeAdapter(ObservationsIn)


@router.websocket("/v1/streams/{stream_id}/ws")
async def stream_socket(websocket: WebSocket, stream_id: StreamId, hub: HubDep, tenant: Tenant) -> None:
    """Each text message is an Observation or {"observations": [...]}; each gets exactly one reply, in order:
    the same JSON as the POST response, or {"detail": ...} for a bad message (the socket stays open)."""
    info = await _accept_known(websocket, hub, tenant, stream_id, create=True)
    if info is None:
        return
    s = hub.settings
    waiting_for = "a message"
    try:
        # One deadline per connection, moved at each phase: far cheaper than a wait_for (a task) per message.
        async with moving_deadline() as deadline:
            while True:
                waiting_for = "a message"
                deadline.move(s.ws_idle_seconds)
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text, data = message.get("text"), message.get("bytes")
                if len(text or data or "") > s.max_ws_message_bytes:
                    await websocket.close(TOO_BIG, f"messages are limited to {s.max_ws_message_bytes} bytes")
                    return
                deadline.move(None)  # the engine's own work is not the client's idleness
                try:
                    reply = await _answer(hub, tenant, stream_id, text, data, info.incarnation)
                except StreamReplaced as exc:  # deleted: never attach to a stream created later with its id
                    await websocket.close(POLICY_VIOLATION, str(exc)[:120])
                    return
                waiting_for = "the client to read"  # a client that stops reading is dropped
                deadline.move(s.ws_send_timeout)
                await websocket.send_text(reply)
    except TimeoutError:
        if waiting_for == "a message":
            with contextlib.suppress(Exception):
                await websocket.close(NORMAL, f"idle for {s.ws_idle_seconds:g} s")
    except (WebSocketDisconnect, RuntimeError):  # RuntimeError: closed by the server meanwhile
        return
    finally:
        open_sockets(websocket.app).discard(websocket)


async def _answer(hub: AnyHub, tenant: str, stream: str, text: str | None, data: bytes | None, incarnation: int) -> str:
    """The reply to one message; raises ``StreamReplaced`` once the socket's stream is gone."""
    if text is None:
        return json.dumps({"detail": [{"loc": [], "msg": "messages must be text (JSON)", "type": "message_type"}]})
    try:
        body = MESSAGE.validate_json(text)
        results = await observe_stream(hub, tenant, stream, body, incarnation)
    except ValidationError as exc:
        return json.dumps({"detail": validation_errors(exc.errors())})
    except StreamNotFound as exc:  # deleted, and no stream of that id since
        raise StreamReplaced(stream) from exc
    except StreamReplaced:
        raise
    except (ServiceError, CoreError) as exc:
        return json.dumps({"detail": status_and_detail(exc)[1]})
    return orjson.dumps({"stream": stream, "results": results}).decode()


@router.websocket("/v1/streams/{stream_id}/watch")
async def watch_stream(websocket: WebSocket, stream_id: StreamId, hub: HubDep, tenant: Tenant) -> None:
    """Receive {"stream", "results", "observations"} for every batch applied to the stream by any client
    (``observations``: the x and y behind each result); a watcher too slow to keep up is dropped (close 1013)
    and never slows the stream."""
    # Watching before the stream is confirmed: a batch applied, or a delete, between the two is not missed
    # (a watcher registered after its stream was deleted would wait for ever).
    batches = hub.watch(tenant, stream_id)
    try:
        if await _accept_known(websocket, hub, tenant, stream_id) is not None:
            await _relay(websocket, hub, batches, lambda batch: batch, f"stream {stream_id!r} was deleted")
    finally:
        hub.unwatch(tenant, stream_id, batches)
        open_sockets(websocket.app).discard(websocket)


@router.websocket("/v1/anomalies/watch")
async def watch_anomalies(
    websocket: WebSocket, hub: HubDep, tenant: Tenant, since: Annotated[int | None, Query(ge=0)] = None,
    openings: bool = False,
) -> None:  # fmt: skip
    """Receive {"anomalies": [...]} as the tenant's observations are judged anomalous (each alert as GET
    /v1/anomalies gives it); with ``since``, first every kept alert after that id; with ``openings``, only
    the alerts that open an episode. Each alert once, in id order; a watcher too slow to keep up is dropped
    (close 1013)."""
    shown = openings_of if openings else list
    if isinstance(hub, ShardedHub):
        await _follow_feed(websocket, hub, tenant, since, shown)
        return
    alerts = hub.watch_anomalies(tenant)  # before reading the backlog: nothing falls between the two
    try:
        if not await _accept(websocket, hub):
            return
        sent = since  # the last alert id the client has (None: it asked for none of the past)
        while sent is not None:  # the backlog, a page at a time
            try:
                page = await hub.anomalies(tenant, sent, MAX_ALERTS)
            except ServiceError as exc:  # recovering or stopping: worth another try
                await websocket.close(TRY_AGAIN_LATER, str(exc)[:120])
                return
            if picked := shown(page):
                await asyncio.wait_for(_send(websocket, {"anomalies": picked}), hub.settings.ws_send_timeout)
            if page:
                sent = page[-1]["id"]
            if len(page) < MAX_ALERTS:
                break

        def unseen(batch: dict) -> dict | None:  # what the backlog sent already goes
            fresh = shown([alert for alert in batch["anomalies"] if sent is None or alert["id"] > sent])
            return {"anomalies": fresh} if fresh else None

        await _relay(websocket, hub, alerts, unseen, "")
    except (WebSocketDisconnect, RuntimeError, TimeoutError):
        return
    finally:
        hub.unwatch_anomalies(tenant, alerts)
        open_sockets(websocket.app).discard(websocket)


async def _follow_feed(
    websocket: WebSocket, hub: ShardedHub, tenant: str, since: int | None, shown: Callable[[list], list]
) -> None:
    """The alerts watch of a sharded server: the feed over every shard (``ShardedHub.feed``) read from
    ``since`` (None: from now) whenever a shard stored new alerts of the tenant, and every
    ``FEED_POLL_SECONDS`` while a lagging shard holds alerts back (``FEED_IDLE_SECONDS`` otherwise). Pushed
    alerts could not be put in id order across shards; the feed is, so this is as the single process's
    watch. ``shown``: what of a page is sent (every alert, or the openings)."""
    wakes = hub.watch_anomalies(tenant)
    closed: asyncio.Future | None = None
    try:
        if not await _accept(websocket, hub):
            return
        closed = asyncio.ensure_future(_until_closed(websocket))
        sent = since if since is not None else (await hub.feed(tenant, 2**63 - 1, 1))[1]
        while True:
            page, sent, held = await hub.feed(tenant, sent, MAX_ALERTS)
            if picked := shown(page):
                await asyncio.wait_for(_send(websocket, {"anomalies": picked}), hub.settings.ws_send_timeout)
            if len(page) == MAX_ALERTS:
                continue
            woken = asyncio.ensure_future(wakes.get())
            done, _ = await asyncio.wait(
                {woken, closed}, timeout=FEED_POLL_SECONDS if held else FEED_IDLE_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            if closed in done:
                woken.cancel()
                return
            items = [woken.result()] if woken in done else []
            woken.cancel()
            while not wakes.empty():  # one read of the feed answers them all
                items.append(wakes.get_nowait())
            if None in items:  # dropped while a page was sent (the queue filled): watched again
                hub.unwatch_anomalies(tenant, wakes)
                wakes = hub.watch_anomalies(tenant)
    except ServiceError as exc:  # a shard recovering, or the service stopping: worth another try
        with contextlib.suppress(Exception):
            await websocket.close(TRY_AGAIN_LATER, str(exc)[:120])
    except TimeoutError:  # not reading at all
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(TRY_AGAIN_LATER, "too slow to keep up"), 1)
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        if closed is not None:
            closed.cancel()
        hub.unwatch_anomalies(tenant, wakes)
        open_sockets(websocket.app).discard(websocket)


async def _relay(
    websocket: WebSocket, hub: AnyHub, batches: asyncio.Queue, message: Callable[[Any], Any], gone: str
) -> None:
    """Send ``message(batch)`` (unless None) for every batch of the queue until the client goes; close 1013 if
    it falls behind or stops reading, 1008 (saying ``gone``) when the queue says its subject is gone."""
    closed = asyncio.ensure_future(_until_closed(websocket))
    try:
        while True:
            ready = asyncio.ensure_future(batches.get())
            done, _ = await asyncio.wait({ready, closed}, return_when=asyncio.FIRST_COMPLETED)
            if closed in done:
                ready.cancel()
                return
            batch = ready.result()
            if batch is None:
                await websocket.close(TRY_AGAIN_LATER, "too slow to keep up")
                return
            if batch is GONE:
                await websocket.close(POLICY_VIOLATION, gone)
                return
            payload = message(batch)
            if payload is None:
                continue
            try:
                await asyncio.wait_for(_send(websocket, payload), hub.settings.ws_send_timeout)
            except TimeoutError:  # not reading at all: say why if it ever reads again, and go
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(websocket.close(TRY_AGAIN_LATER, "too slow to keep up"), 1)
                return
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        closed.cancel()


async def _send(websocket: WebSocket, payload: Any) -> None:
    await websocket.send_text(orjson.dumps(payload).decode())


async def _accept_known(
    websocket: WebSocket, hub: AnyHub, tenant: str, stream: str, create: bool = False
) -> StreamInfo | None:
    """Accept the socket for an existing stream (its info), or close it saying why (None). With ``create``
    (a socket that sends observations), an unknown stream is created from the tenant's template if it has one,
    as an observation sent over HTTP would create it."""
    if not await _accept(websocket, hub):
        return None
    try:
        try:
            info = await hub.info(tenant, stream)
        except StreamNotFound:
            template = await hub.template(tenant) if create else None
            if template is None:
                raise
            info, _ = await hub.create(tenant, stream, template.config, template.labels)
    except (StreamNotFound, LimitReached) as exc:
        await websocket.close(POLICY_VIOLATION, str(exc)[:120])
        return None
    except ServiceError as exc:  # recovering or stopping: worth another try
        await websocket.close(TRY_AGAIN_LATER, str(exc)[:120])
        return None
    return info


async def _accept(websocket: WebSocket, hub: AnyHub) -> bool:
    """Accept the socket from an allowed origin, or close it saying why (False). Refusals are accepted first:
    a handshake refused with 403 reaches a browser's script as 1006 with no reason."""
    await websocket.accept(subprotocol=subprotocol(websocket.scope))
    headers = websocket.headers
    if not origin_allowed(headers.get("origin"), headers.get("host"), hub.settings.allowed_origins):
        origin = websocket.headers.get("origin", "")[:100]
        await websocket.close(POLICY_VIOLATION, f"origin {origin} not allowed (TBPTT_ALLOWED_ORIGINS)")
        return False
    open_sockets(websocket.app).add(websocket)
    return True


def open_sockets(app) -> set[WebSocket]:
    """The app's open WebSockets, so that a shutdown can say goodbye (1001) before the server drops them."""
    if not hasattr(app.state, "websockets"):
        app.state.websockets = set()
    return app.state.websockets


async def close_all(app, reason: str = "the server is shutting down") -> None:
    for websocket in list(open_sockets(app)):
        with contextlib.suppress(Exception):  # already gone
            await websocket.close(GOING_AWAY, reason)


async def _until_closed(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while websocket.application_state != WebSocketState.DISCONNECTED:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
