"""``uvicorn service.main:app``: the app on settings from ``TBPTT_*`` environment variables."""

from .app import create_app

app = create_app()
