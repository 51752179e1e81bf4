"""The ``tbptt`` command: run the service, feed it, look at what it learned.

    tbptt serve [--host 127.0.0.1] [--port 8000] [--data-dir ./data]
    tbptt replay FILE.csv --stream ID [--x COLS] [--y COLS] [--rate R] [--websocket] [--plot FILE.png]
    tbptt streams [list | show ID | delete ID]
    tbptt export ID FILE.safetensors          tbptt import ID FILE.safetensors
    tbptt simulate [--streams N] [--rate R] [--seconds S] [--csv FILE]

The client commands talk to ``--url`` (default ``$TBPTT_URL`` or http://127.0.0.1:8000) with ``--api-key``
(default ``$TBPTT_API_KEY``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import math
import os
import sys
import time
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

    replay = _client_command(commands, "replay", "stream a CSV file into a stream, then report and plot")
    replay.add_argument("file", type=Path, help="a CSV file with a header row")
    replay.add_argument("--stream", required=True, help="the stream (created if missing)")
    replay.add_argument("--x", help="input columns, comma-separated names or 0-based indices (default: the rest)")
    replay.add_argument("--y", help="target columns (default: none, forecast the next row's x)")
    replay.add_argument("--rate", type=float, default=0.0, help="observations per second (default: as fast as it can)")
    replay.add_argument("--batch", type=int, default=100, help="observations per request over HTTP")
    replay.add_argument("--websocket", action="store_true", help="one WebSocket message per observation")
    replay.add_argument("--plot", type=Path, help="the PNG to write (default: STREAM.png)")
    replay.set_defaults(run=_replay)

    streams = _client_command(commands, "streams", "list, show or delete streams")
    streams.add_argument("action", nargs="?", default="list", choices=["list", "show", "delete"])
    streams.add_argument("stream", nargs="?", help="the stream, for show and delete")
    streams.set_defaults(run=_streams)

    export = _client_command(commands, "export", "write a stream's model to a safetensors file")
    export.add_argument("stream")
    export.add_argument("file", type=Path)
    export.set_defaults(run=_export)

    load = _client_command(commands, "import", "load a safetensors file into a stream's model")
    load.add_argument("stream")
    load.add_argument("file", type=Path)
    load.set_defaults(run=_import)

    simulate = _client_command(commands, "simulate", "synthetic sensors (sine, noise, drift, anomalies)")
    simulate.add_argument("--streams", type=int, default=10, help="how many sensors, streams sim-0 ... (default 10)")
    simulate.add_argument("--rate", type=float, default=10.0, help="readings per second per sensor (default 10)")
    simulate.add_argument("--seconds", type=float, default=60.0, help="for how long (default 60)")
    simulate.add_argument("--anomalies", type=float, default=0.01, help="chance of a spike per reading")
    simulate.add_argument("--csv", type=Path, help="write the readings to this CSV instead of sending them")
    simulate.set_defaults(run=_simulate)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        sys.exit(130)


def _client_command(commands, name: str, help: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help)
    command.add_argument("--url", default=os.environ.get("TBPTT_URL", "http://127.0.0.1:8000"))
    command.add_argument("--api-key", default=os.environ.get("TBPTT_API_KEY"))
    return command


def _client(args: argparse.Namespace):
    from .client import Client

    return Client(args.url, args.api_key)


# -- serve -------------------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> None:
    import signal

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


# -- replay ------------------------------------------------------------------------------------------------------


def _columns(header: list[str], spec: str | None) -> list[int]:
    if not spec:
        return []
    picked = []
    for name in spec.split(","):
        name = name.strip()
        if name.isdigit():
            picked.append(int(name))
        elif name in header:
            picked.append(header.index(name))
        else:
            sys.exit(f"no column {name!r}: the columns are {', '.join(header)}")
    return picked


def _read(path: Path, x_spec: str | None, y_spec: str | None) -> tuple[list[str], list[list[float]], list[list[float]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], [r for r in rows[1:] if r]
    y_cols = _columns(header, y_spec)

    def numeric(col: int) -> bool:
        try:
            [float(r[col]) for r in rows[:20]]
        except ValueError:
            return False
        return True

    x_cols = _columns(header, x_spec) or [c for c in range(len(header)) if c not in y_cols and numeric(c)]
    if not x_cols:
        sys.exit("no numeric input columns: name them with --x")
    xs = [[float(r[c]) for c in x_cols] for r in rows]
    ys = [[float(r[c]) for c in y_cols] for r in rows] if y_cols else []
    return [header[c] for c in x_cols], xs, ys


def _replay(args: argparse.Namespace) -> None:
    from .client import APIError

    names, xs, ys = _read(args.file, args.x, args.y)
    forecast = not ys
    with _client(args) as tbptt:
        try:
            tbptt.info(args.stream)
        except APIError as exc:
            if exc.status != 404:
                raise
            config = {"model": {"input_size": len(names)}, "target": "next"} if forecast else {
                "model": {"input_size": len(names), "output_size": len(ys[0])}
            }  # fmt: skip
            tbptt.create(args.stream, config)
        observations = [{"x": x} if forecast else {"x": x, "y": y} for x, y in zip(xs, ys or xs)]
        results = _send(tbptt, args, observations)
    truth = xs[1:] if forecast else ys
    predictions = [r["prediction"] for r in (results[:-1] if forecast else results)]
    errors = [abs(p - t) for pred, true in zip(predictions, truth) for p, t in zip(pred, true)]
    mae = sum(errors) / len(errors)
    rmse = math.sqrt(sum(e * e for e in errors) / len(errors))
    print(f"{args.stream}: {len(results)} observations from {args.file.name}")
    print(f"prequential MAE {mae:.6g}  RMSE {rmse:.6g}")
    if forecast:
        last = [abs(a - b) for prev, nxt in itertools.pairwise(xs) for a, b in zip(prev, nxt)]
        print(f"last-value forecast MAE {sum(last) / len(last):.6g}  (ratio {mae / (sum(last) / len(last)):.3f})")
    plot = args.plot or Path(f"{args.stream}.png")
    _plot(plot, args.stream, names, truth, predictions, [r["loss"] for r in results])
    print(f"plot: {plot}")


def _send(tbptt, args: argparse.Namespace, observations: list[dict]) -> list[dict]:
    results: list[dict] = []
    started = time.monotonic()
    progress = _Progress(len(observations))
    if args.websocket:
        with tbptt.stream(args.stream) as ws:
            for k, obs in enumerate(observations):
                results += ws.send(obs)
                _pace(args.rate, k + 1, started)
                progress.show(k + 1)
    else:
        size = max(1, min(args.batch, int(args.rate) or args.batch))
        for start in range(0, len(observations), size):
            results += tbptt.observe(args.stream, observations[start : start + size])
            _pace(args.rate, start + size, started)
            progress.show(min(start + size, len(observations)))
    progress.done()
    return results


def _pace(rate: float, sent: int, started: float) -> None:
    if rate > 0:
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))


class _Progress:
    """A progress bar on stderr (only when it is a terminal, or TBPTT_PROGRESS=1)."""

    def __init__(self, total: int) -> None:
        self.total, self.started = total, time.monotonic()
        self.enabled = sys.stderr.isatty() or os.environ.get("TBPTT_PROGRESS") == "1"

    def show(self, done: int) -> None:
        if self.enabled:
            width = 30
            filled = width * done // self.total
            rate = done / max(time.monotonic() - self.started, 1e-9)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {rate:,.0f} obs/s")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _plot(path: Path, stream: str, names: list[str], truth, predictions, losses) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(1, len(predictions) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(steps, [t[0] for t in truth[: len(predictions)]], label=f"actual ({names[0] if truth else ''})", lw=1)
    top.plot(steps, [p[0] for p in predictions], label="predicted (before learning)", lw=1)
    top.set_title(f"{stream}: actual and predicted")
    top.legend(loc="upper left")
    known = [(k + 1, loss) for k, loss in enumerate(losses[: len(predictions)]) if loss is not None]
    if known:
        window = max(1, len(known) // 100)
        smooth = [sum(v for _, v in known[max(0, i - window) : i + 1]) / len(known[max(0, i - window) : i + 1])
                  for i in range(len(known))]  # fmt: skip
        bottom.plot([k for k, _ in known], smooth, color="tab:red", lw=1)
    bottom.set_yscale("log")  # the first steps' losses dwarf the rest
    bottom.set_ylabel("loss")
    bottom.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- streams, export, import ---------------------------------------------------------------------------------------


def _streams(args: argparse.Namespace) -> None:
    with _client(args) as tbptt:
        if args.action == "list":
            for s in tbptt.streams():
                c = s["config"]
                print(f"{s['id']:<30} {c['model']['cell']:<5} in {c['model']['input_size']:<4} "
                      f"steps {s['steps']:<10} updates {s['updates']}")  # fmt: skip
            return
        if not args.stream:
            sys.exit(f"tbptt streams {args.action} needs a stream id")
        if args.action == "show":
            print(json.dumps({"info": tbptt.info(args.stream), "metrics": tbptt.metrics(args.stream)}, indent=2))
        else:
            tbptt.delete(args.stream)
            print(f"deleted {args.stream}")


def _export(args: argparse.Namespace) -> None:
    with _client(args) as tbptt:
        args.file.write_bytes(tbptt.export_model(args.stream))
    print(f"wrote {args.file}")


def _import(args: argparse.Namespace) -> None:
    with _client(args) as tbptt:
        info = tbptt.import_model(args.stream, args.file.read_bytes())
    print(f"loaded {args.file} into {info['id']}")


# -- simulate ------------------------------------------------------------------------------------------------------


def _readings(count: int, seed: int = 0):
    """Endless readings of ``count`` synthetic sensors: a daily-like sine, noise, slow drift, rare spikes."""
    import random

    rng = random.Random(seed)
    phases = [rng.uniform(0, 2 * math.pi) for _ in range(count)]
    levels = [rng.uniform(10, 50) for _ in range(count)]
    t = 0
    while True:
        t += 1
        yield (
            t,
            [
                levels[k] + 5 * math.sin(2 * math.pi * t / 96 + phases[k]) + 0.01 * t + rng.gauss(0, 0.3)
                for k in range(count)
            ],
        )


def _simulate(args: argparse.Namespace) -> None:
    import random

    rng = random.Random(1)
    ticks = max(1, int(args.seconds * args.rate))
    readings = _readings(args.streams)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["t", *[f"sim-{k}" for k in range(args.streams)]])
            for _ in range(ticks):
                t, values = next(readings)
                writer.writerow([t, *(round(v + (rng.choice([-1, 1]) * 20 if rng.random() < args.anomalies else 0), 4)
                                      for v in values)])  # fmt: skip
        print(f"wrote {ticks} readings of {args.streams} sensors to {args.csv}")
        return
    with _client(args) as tbptt:
        for k in range(args.streams):
            tbptt.create(f"sim-{k}", {"model": {"input_size": 1}, "target": "next"})
        started = time.monotonic()
        progress = _Progress(ticks)
        for tick in range(ticks):
            _, values = next(readings)
            spikes = [v + (rng.choice([-1, 1]) * 20 if rng.random() < args.anomalies else 0) for v in values]
            tbptt.observe_many([{"stream": f"sim-{k}", "x": v} for k, v in enumerate(spikes)])
            _pace(args.rate, tick + 1, started)
            progress.show(tick + 1)
        progress.done()
    print(f"sent {ticks * args.streams} readings to {args.streams} streams (sim-0 ... sim-{args.streams - 1})")


if __name__ == "__main__":
    main()
