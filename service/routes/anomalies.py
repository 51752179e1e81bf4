"""The tenant's alerts feed: every observation of its streams judged anomalous (service/alerts.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..alerts import openings_of
from ..deps import HubDep, Tenant
from ..schemas import AlertsPublic

router = APIRouter(prefix="/v1/anomalies", tags=["anomalies"])

MAX_ALERTS = 1_000  # per reply


@router.get("", response_model=AlertsPublic)
async def list_anomalies(
    hub: HubDep,
    tenant: Tenant,
    since: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="only alerts after this id (0: from the oldest kept)")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_ALERTS, description="at most this many")] = 100,
    openings: Annotated[
        bool, Query(description="only the alerts that open an episode (a reply may then hold fewer than limit)")
    ] = False,
) -> dict:
    """The alerts after ``since``, oldest first; ``next`` is what to pass as ``since`` to poll for more. The
    newest TBPTT_ALERTS_RETAINED per tenant are kept, through restarts; a deleted stream's go with it.
    /v1/anomalies/watch (WebSocket) pushes them as they happen. With ``openings``, the alerts among the next
    ``limit`` that open an episode: none, it may be, while more follow (poll again from ``next``)."""
    alerts = await hub.anomalies(tenant, since, limit)
    return {"anomalies": openings_of(alerts) if openings else alerts, "next": alerts[-1]["id"] if alerts else since}
