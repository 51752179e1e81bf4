"""``tbptt serve --shards N --workers M``: M front processes on one port, in front of N shards.

This process (the serving one) starts Ray and the shards, named in a namespace of its own, binds the port,
and spawns the fronts: each a FastAPI app on the shared socket that finds the shards by name
(service/sharded.py's ``Joined``), so that the parsing, validation and encoding of requests, which one
front does on one core, is spread over several. It starts a front again if one dies (the streams are the
shards': a front holds nothing a client was told is done). SIGTERM or SIGINT stops the fronts (each drains
what it has, as one server does), then the shards (final checkpoints), then Ray.

Per-front settings: each front admits ``max_connections`` and a tenant ``rate_limit / M`` requests per
second (``rate_burst / M`` at once), so that M fronts together admit what the settings say.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn

from ..settings import Settings
from ..sharded import Joined, Shards

log = logging.getLogger(__name__)

RESTART_SECONDS = 1.0  # a front that dies is started again no sooner than this after its last start
METRICS_PREFIX = "tbptt-fronts-metrics-"  # then the serving process's pid: see ``forget_dead_metrics``


def serve_fronts(settings: Settings) -> None:
    import ray

    namespace = f"tbptt-{uuid.uuid4().hex[:12]}"  # this server's shards, whatever else runs on the cluster
    shards = Shards.start(settings, namespace)
    forget_dead_metrics()
    metrics = tempfile.TemporaryDirectory(prefix=f"{METRICS_PREFIX}{os.getpid()}-")
    # The fronts count HTTP requests in files there, which /metrics on any front sums (service/telemetry.py).
    # Set after Ray started: the shards (Ray's worker processes) count in their own registries.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics.name
    fronts: Fronts | None = None
    try:
        address = ray.get_runtime_context().gcs_address
        listening = uvicorn.Config(app=None, host=settings.host, port=settings.port).bind_socket()  # type: ignore[arg-type]
        fronts = Fronts(settings, Joined(address, namespace, 0), listening)
        stop: list[int] = []  # (a signal handler must not take a lock the interrupted code may hold)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, _: stop.append(signum))
        log.info("serving on %s:%d with %d fronts and %d shards", settings.host, settings.port,
                 settings.workers, settings.shards)  # fmt: skip
        fronts.run(stop)  # (the fronts stopped within half the shutdown timeout ...)
    finally:
        began = fronts.stopping_since if fronts is not None else time.monotonic()
        shards.stop(max(began + settings.shutdown_timeout - time.monotonic(), 1.0))  # (... the shards the rest)
        metrics.cleanup()


def forget_dead_metrics(folder: Path | None = None) -> None:
    """Remove the metrics folders of serving processes that are gone: one killed (kill -9, a crash) leaves
    its folder behind, which a graceful stop removes."""
    for path in Path(folder or tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*"):
        pid = path.name.removeprefix(METRICS_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


class Fronts:
    def __init__(self, settings: Settings, joined: Joined, listening: socket.socket) -> None:
        self.settings, self.joined, self.listening = settings, joined, listening
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter: no Ray or torch state copied
        self._processes: list[Any] = [None] * settings.workers
        self._started = [0.0] * settings.workers
        self.stopping_since = 0.0  # when the fronts were told to stop

    def run(self, stop: list[int]) -> None:
        """Every front started, and started again when it dies, until a signal is in ``stop``; then each
        stopped gracefully."""
        try:
            while not stop:
                for k, process in enumerate(self._processes):
                    if process is None or (not process.is_alive() and self._due(k)):
                        if process is not None:
                            log.warning("front %d exited (%s); starting it again", k, process.exitcode)
                        self._start(k)
                time.sleep(0.2)
        finally:
            self._stop_all()

    def _due(self, k: int) -> bool:
        return time.monotonic() - self._started[k] >= RESTART_SECONDS

    def _start(self, k: int) -> None:
        joined = dataclasses.replace(self.joined, front=k)
        process = self._context.Process(
            target=run_front, args=(self.settings, joined, self.listening), name=f"tbptt-front-{k}", daemon=False
        )
        process.start()
        self._processes[k], self._started[k] = process, time.monotonic()

    def _stop_all(self) -> None:
        """SIGTERM to each front (uvicorn drains it), then SIGKILL to any still there after its share of the
        shutdown timeout (``run_front``), and a second or two to exit."""
        self.stopping_since = time.monotonic()
        running = [p for p in self._processes if p is not None and p.is_alive()]
        for process in running:
            process.terminate()
        deadline = self.stopping_since + front_share(self.settings) + 2
        for process in running:
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                log.warning("front %s did not stop in time: killed", process.name)
                process.kill()
                process.join(5)


def run_front(settings: Settings, joined: Joined, listening: socket.socket) -> None:
    """One front, in its own process, on the serving process's socket."""
    import sys

    from ..app import create_app
    from .serve import configure_logging, serve_app

    configure_logging(settings, f"front-{joined.front} ")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # (uvicorn's graceful shutdown first: see serve.py)
    fronts = settings.workers
    # The serving process stops the shards after the fronts, all within the shutdown timeout.
    settings = settings.model_copy(update={"shutdown_timeout": front_share(settings)})
    if settings.rate_limit:  # the tenant's rate is the service's: each front admits its share
        settings = settings.model_copy(
            update={"rate_limit": settings.rate_limit / fronts, "rate_burst": max(1, settings.rate_burst // fronts)}
        )
    serve_app(create_app(settings, joined), settings, [listening])


def front_share(settings: Settings) -> float:
    """The part of the shutdown timeout a front's own stop may take (draining its connections, finishing its
    calls): half; the shards' final checkpoints have the rest."""
    return settings.shutdown_timeout / 2
