"""The live dashboard: one static page (no build step), fed by the API and the watch WebSocket."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])
PAGE = Path(__file__).parents[1] / "static" / "dashboard.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def get_dashboard() -> HTMLResponse:
    """The dashboard: streams, and for one a live chart of actual against predicted, and of the loss."""
    return HTMLResponse(PAGE.read_text(), headers={"Cache-Control": "no-cache"})
