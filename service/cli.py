"""The ``tbptt`` command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from .settings import Settings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tbptt", description="Streaming online learning with exact TBPTT.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service (settings also from TBPTT_* variables)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--data-dir", type=Path, help="where the store lives (default ./data)")
    serve.set_defaults(run=_serve)

    args = parser.parse_args(argv)
    args.run(args)


def _serve(args: argparse.Namespace) -> None:
    import signal
    import sys

    import uvicorn

    from .app import create_app
    from .auth import Keys, check_exposure
    from .ws import close_all

    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "data_dir": args.data_dir}.items() if v}
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn shuts down gracefully on SIGTERM (final checkpoints included), then re-raises the signal for the
    # previous handler: a stop that was asked for and done cleanly exits 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    check_exposure(settings, Keys.from_settings(settings), settings.host)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        ws_max_size=settings.max_ws_message_bytes,  # close 1009 beyond
        limit_concurrency=settings.max_connections,  # 503 beyond, rather than hanging
    )

    class GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
            await close_all(app)  # 1001 "going away", before uvicorn drops what is left (1012)
            await super().shutdown(sockets)

    GracefulServer(config).run()


if __name__ == "__main__":
    main()
