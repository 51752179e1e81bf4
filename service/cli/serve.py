"""``tbptt serve``: the one way to run the service (uvicorn, with the checks and the graceful shutdown)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import signal
import socket
import sys
import time

import uvicorn
from fastapi import FastAPI

from .. import keygroups, logredact
from ..app import create_app
from ..auth import Keys, check_exposure
from ..datadir import preflight
from ..protocol import GuardedProtocol
from ..settings import Settings
from ..ws import close_all
from .main import UsageError


def run(args: argparse.Namespace) -> None:
    given = {"host": args.host, "port": args.port, "data_dir": args.data_dir, "shards": args.shards,
             "workers": args.workers, "ray_address": args.ray_address}  # fmt: skip
    overrides = {k: v for k, v in given.items() if v not in (None, "")}
    settings = Settings(**overrides)
    if settings.workers > 1 and not settings.shards:
        raise UsageError("--workers needs --shards: one process owns every stream without shards, so it has one front")
    if settings.shards and importlib.util.find_spec("ray") is None:
        raise UsageError("--shards runs the shards on Ray: pip install 'tbptt-service[ray]' (see README, Shards)")
    keys = configure_logging(settings)
    check_exposure(settings, keys, settings.host)
    preflight(settings.data_dir)  # refused here, before listening: not a server that answers 503 forever
    keygroups.preflight(settings.data_dir, settings.shards)
    if settings.workers > 1:
        from .fronts import serve_fronts

        serve_fronts(settings)
        return
    # uvicorn shuts down gracefully on SIGTERM (final checkpoints included), then re-raises the signal for the
    # previous handler: a stop that was asked for and done cleanly exits 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve_app(create_app(settings), settings)


def configure_logging(settings: Settings, name: str = "") -> Keys:
    """The root handlers, with every API key redacted from what they write (uvicorn's records included)."""
    keys = Keys.from_settings(settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format=f"%(asctime)s %(levelname)s {name}%(name)s: %(message)s"
    )
    logredact.install(keys.secrets())  # uvicorn logs through these handlers too (log_config=None below)
    return keys


def serve_app(app: FastAPI, settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """uvicorn, on ``settings``' address or on ``sockets`` (a front of several: the serving process bound it)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go to the root handlers, where secrets are redacted
        access_log=False,
        # requests in flight get half the shutdown timeout, the final checkpoints what is left (app.py)
        timeout_graceful_shutdown=max(1, math.floor(settings.shutdown_timeout / 2)),  # (whole seconds)
        ws_max_size=settings.max_ws_message_bytes,  # close 1009 beyond
        # 503 beyond max_connections, 408 and 431 for slow and huge headers: see protocol.py
        http=GuardedProtocol.configured(
            settings.header_timeout,
            settings.max_header_bytes,
            settings.max_connections,
            settings.body_timeout,
            settings.body_min_rate,
        ),
    )

    class GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets: list | None = None) -> None:
            app.state.stopping_since = time.monotonic()  # the shutdown timeout counts from here
            await close_all(app)  # 1001 "going away", before uvicorn drops what is left (1012)
            await super().shutdown(sockets)

    GracefulServer(config).run(sockets)
