"""``tbptt serve``: the one way to run the service (uvicorn, with the checks and the graceful shutdown)."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys

import uvicorn

from .. import keygroups, logredact
from ..app import create_app
from ..auth import Keys, check_exposure
from ..datadir import preflight
from ..protocol import GuardedProtocol
from ..settings import Settings
from ..ws import close_all


def run(args: argparse.Namespace) -> None:
    given = {"host": args.host, "port": args.port, "data_dir": args.data_dir, "shards": args.shards,
             "ray_address": args.ray_address}  # fmt: skip
    overrides = {k: v for k, v in given.items() if v not in (None, "")}
    settings = Settings(**overrides)
    keys = Keys.from_settings(settings)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logredact.install(keys.secrets())  # uvicorn logs through these handlers too (log_config=None below)
    # uvicorn shuts down gracefully on SIGTERM (final checkpoints included), then re-raises the signal for the
    # previous handler: a stop that was asked for and done cleanly exits 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    check_exposure(settings, keys, settings.host)
    preflight(settings.data_dir)  # refused here, before listening: not a server that answers 503 forever
    keygroups.preflight(settings.data_dir, settings.shards)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go to the root handlers, where secrets are redacted
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),  # uvicorn takes whole seconds
        ws_max_size=settings.max_ws_message_bytes,  # close 1009 beyond
        # 503 beyond max_connections, 408 and 431 for slow and huge headers: see protocol.py
        http=GuardedProtocol.configured(settings.header_timeout, settings.max_header_bytes, settings.max_connections),
    )

    class GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets: list | None = None) -> None:
            await close_all(app)  # 1001 "going away", before uvicorn drops what is left (1012)
            await super().shutdown(sockets)

    GracefulServer(config).run()
