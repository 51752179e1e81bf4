"""Arguments, dispatch, and what the user reads when something ordinary goes wrong: one line, no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

CLIENT_HELP = "the service's URL (default $TBPTT_URL or http://127.0.0.1:8000)"
KEY_HELP = "the API key (default $TBPTT_API_KEY)"


class UsageError(Exception):
    """Something the user can fix: printed as it is, exit status 2."""


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `tbptt streams list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        message, status = _explain(exc, args)
        if message is None:
            raise
        print(f"tbptt {args.command}: {message}", file=sys.stderr)
        sys.exit(status)


def _explain(exc: Exception, args: argparse.Namespace) -> tuple[str | None, int]:
    """One line for the failures a user meets (and can act on); None for a bug, which keeps its traceback."""
    import httpx
    from pydantic import ValidationError

    from ..auth import InvalidKeys
    from ..client import APIError
    from ..datadir import DataDirUnusable

    url = getattr(args, "url", "")
    if isinstance(exc, UsageError | InvalidKeys | DataDirUnusable):
        return str(exc), 2
    if isinstance(exc, APIError):
        hints = {
            401: " (pass --api-key or set TBPTT_API_KEY)",
            404: " (tbptt streams list shows this key's streams)",
            429: " (rate limited: slow down with --rate)",
        }
        return f"{url} answered {exc.status}: {detail_text(exc.detail)}{hints.get(exc.status, '')}", 1
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach {url} ({exc or type(exc).__name__}): is `tbptt serve` running? (--url, TBPTT_URL)", 1
    if isinstance(exc, ValidationError):
        problems = "; ".join(f"TBPTT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        return f"invalid settings: {problems}", 2
    if isinstance(exc, OSError):
        return str(exc), 1
    return None, 1


def detail_text(detail: object) -> str:
    """A refusal's detail as one line (FastAPI's 422 list: each item's place and message)."""
    if isinstance(detail, list):  # FastAPI's 422 list
        return "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail if isinstance(d, dict)
        )
    return str(detail)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tbptt",
        description="Streaming online learning with exact TBPTT. Client commands talk to --url "
        "($TBPTT_URL) with --api-key ($TBPTT_API_KEY); serve takes its settings from TBPTT_* variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service (settings also from TBPTT_* variables; see README)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, $TBPTT_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, $TBPTT_PORT)")
    serve.add_argument("--data-dir", type=Path, help="where the store lives (default ./data, $TBPTT_DATA_DIR)")
    serve.add_argument(
        "--shards",
        type=int,
        help="shard processes that own the streams, as Ray actors (pip extra "
        "[ray]; default 0: one process, no Ray; $TBPTT_SHARDS)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="with --shards: front processes sharing the port, each routing requests to the shards (default 1; "
        "$TBPTT_WORKERS)",
    )
    serve.add_argument(
        "--ray-address", help="with --shards: the Ray cluster to join (default: start a local one; $TBPTT_RAY_ADDRESS)"
    )
    serve.set_defaults(run=_lazy("serve", "run"))

    rebalance = commands.add_parser(
        "rebalance", help="move a data directory's streams to another shard count (offline: no server running)"
    )
    rebalance.add_argument("--data-dir", type=Path, help="the data directory (default ./data, $TBPTT_DATA_DIR)")
    rebalance.add_argument("--shards", type=int, required=True, help="the shard count to serve it with from now on")
    rebalance.set_defaults(run=_lazy("rebalance", "run"))

    replay = _client_command(commands, "replay", "stream a CSV file into a stream, then report and plot")
    replay.add_argument("file", type=Path, help="a CSV file with a header row")
    replay.add_argument("--stream", required=True, help="the stream (created if missing)")
    replay.add_argument("--x", help="input columns, comma-separated names or 0-based indices "
                        "(default: every numeric column but --y and time or index columns)")  # fmt: skip
    replay.add_argument("--y", help="target columns (default: none, forecast the next row's x)")
    replay.add_argument("--ts", help="the time column, sent as each observation's ts (ISO 8601, read as UTC without "
                        "an offset, or Unix seconds)")  # fmt: skip
    replay.add_argument("--rate", type=float, default=0.0, help="observations per second (default: as fast as it can)")
    replay.add_argument("--batch", type=int, default=100, help="observations per request over HTTP")
    replay.add_argument("--websocket", action="store_true", help="one WebSocket message per observation")
    replay.add_argument("--plot", type=Path, help="the PNG to write (default: STREAM.png)")
    replay.add_argument("--config", help="the stream's settings, as PUT /v1/streams/{id} takes them (JSON, or @FILE), "
                        "merged over those the columns give, e.g. '{\"patterns\": true}'; a stream that exists must have "
                        "them (default: the columns' only, or the existing stream's)")  # fmt: skip
    replay.set_defaults(run=_lazy("replay", "run"))

    streams = _client_command(commands, "streams", "list, show or delete streams")
    streams.add_argument("action", nargs="?", default="list", choices=["list", "show", "delete"])
    streams.add_argument("stream", nargs="?", help="the stream, for show and delete")
    streams.set_defaults(run=_lazy("streams", "run"))

    export = _client_command(commands, "export", "write a stream's model to a safetensors file")
    export.add_argument("stream")
    export.add_argument("file", type=Path)
    export.set_defaults(run=_lazy("streams", "export"))

    load = _client_command(commands, "import", "load a safetensors file into a stream's model")
    load.add_argument("stream")
    load.add_argument("file", type=Path)
    load.set_defaults(run=_lazy("streams", "load"))

    simulate = _client_command(commands, "simulate", "synthetic sensors (sine, noise, drift, anomalies)")
    simulate.add_argument("--streams", type=int, default=10, help="how many sensors, streams sim-0 ... (default 10)")
    simulate.add_argument("--rate", type=float, default=10.0, help="readings per second per sensor (default 10)")
    simulate.add_argument("--seconds", type=float, default=60.0, help="for how long (default 60)")
    simulate.add_argument("--anomalies", type=float, default=0.01, help="chance of a spike per reading")
    simulate.add_argument("--csv", type=Path, help="write the readings to this CSV instead of sending them")
    simulate.set_defaults(run=_lazy("simulate", "run"))
    return parser


def _client_command(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help)
    command.add_argument("--url", default=os.environ.get("TBPTT_URL", "http://127.0.0.1:8000"), help=CLIENT_HELP)
    command.add_argument("--api-key", default=os.environ.get("TBPTT_API_KEY"), help=KEY_HELP)
    return command


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], None]:
    """A command's function, imported when it runs: `tbptt --help` need not load torch or matplotlib."""

    def run(args: argparse.Namespace) -> None:
        import importlib

        getattr(importlib.import_module(f"{__package__}.{module}"), function)(args)

    return run
