"""The engine thread: one thread that owns all model state, and the bridge to it from the event loop.

The event loop never runs tensor code: it submits a job and awaits its future. The thread takes whatever has
queued up: calls run one by one, in order; consecutive observation jobs between them go to the worker as
one batch (micro-batching: streams that arrive together are stepped together). Between batches, and every
``TICK_SECONDS`` while idle, the worker does its housekeeping. The thread knows nothing about streams: what
a batch means is the worker's business (``Shard``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tbptt.models import CoreError

from .errors import ServiceError, Unavailable

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5  # the longest the worker's housekeeping waits while no work comes
RECOVERING_RETRY_AFTER = 1  # seconds a client is told to wait while the service recovers


@dataclass(slots=True)
class Job:
    """One request: a ``payload`` of observations for the worker, or a ``call`` to run on the thread."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    payload: Any = None
    call: Callable[[], Any] | None = None

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        """From the engine thread."""
        self.loop.call_soon_threadsafe(self.settle, value, error)

    def fail(self, error: BaseException) -> None:
        """From the engine thread: a domain error as it is, anything else as an internal error (logged)."""
        self.resolve(error=_domain(error))

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """On the event loop."""
        if self.future.done():  # the client went away
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(value)


class Worker(Protocol):
    """What the engine thread runs: all of it on that thread."""

    def open(self) -> None: ...  # before the first job: open the store, recover

    def apply(self, payloads: list[Any]) -> list[Any]: ...  # per payload: its answer, or the exception

    def tick(self) -> None: ...  # housekeeping, between batches and when idle

    def close(self, failed: bool) -> None: ...  # after the last job (final checkpoints unless failed)


class EngineThread:
    def __init__(self, worker: Worker, batch_wait_seconds: float, torch_threads: int) -> None:
        self.worker = worker
        self.ready = False
        self.failure: BaseException | None = None
        self._batch_wait = batch_wait_seconds
        self._torch_threads = torch_threads
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._stopped = threading.Event()

    # -- the event loop side -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    async def stop(self, timeout: float) -> None:
        """Finish queued work, then close the worker (bounded by ``timeout``)."""
        if not self._thread.is_alive():
            return
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            log.error("engine did not stop within %.0f s", timeout)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the engine thread, between batches; its result or its error."""
        loop = asyncio.get_running_loop()
        return await self._submit(Job(loop, loop.create_future(), call=lambda: fn(*args)))

    async def observe(self, payload: Any) -> Any:
        """Hand ``payload`` to the worker's next batch; what the worker resolves the job with."""
        loop = asyncio.get_running_loop()
        return await self._submit(Job(loop, loop.create_future(), payload=payload))

    async def _submit(self, job: Job) -> Any:
        if self.failure is not None or self._stopped.is_set():
            raise Unavailable("the engine is not running")
        if not self.ready:
            raise Unavailable("the service is recovering; try again shortly", retry_after=RECOVERING_RETRY_AFTER)
        self._jobs.put(job)
        return await job.future

    # -- the engine thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch  # here, not at import: the thread that runs tensor code sets its own thread count

        try:
            torch.set_num_threads(self._torch_threads)
            self.worker.open()
            self.ready = True
            self._serve()
        except BaseException as exc:
            self.failure = exc
            log.exception("engine thread failed")
        finally:
            self._shutdown()

    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=TICK_SECONDS)
            except queue.Empty:
                self.worker.tick()
                continue
            jobs = [job]
            if self._batch_wait and job is not None and job.call is None:
                time.sleep(self._batch_wait)  # let concurrent observations join this batch
            while True:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._process([j for j in jobs if j is not None])
            self.worker.tick()
            if None in jobs:
                return

    def _process(self, jobs: list[Job]) -> None:
        """Calls run in order; consecutive observation jobs between them make one batch."""
        batch: list[Job] = []
        for job in jobs:
            if job.call is None:
                batch.append(job)
                continue
            if batch:
                self._observe(batch)
                batch = []
            try:
                job.resolve(job.call())
            except Exception as exc:
                job.fail(exc)
        if batch:
            self._observe(batch)

    def _observe(self, jobs: list[Job]) -> None:
        """Hand the batch to the worker and answer every job, in one wake-up of the event loop. A bug must
        not leave requests hanging: the worker may hold half a batch, so the service then stops taking work
        (503) and a restart recovers exactly from the log."""
        try:
            outcomes = self.worker.apply([job.payload for job in jobs])
        except Exception as exc:
            self.failure = exc
            log.exception("an engine batch failed; refusing work until restarted")
            for job in jobs:
                job.resolve(error=Unavailable("internal error: the service must be restarted"))
            return
        settled = [(job, _domain(outcome)) for job, outcome in zip(jobs, outcomes)]
        jobs[0].loop.call_soon_threadsafe(_settle_all, settled)

    def _shutdown(self) -> None:
        self._stopped.set()
        while True:  # refuse what is still queued
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.resolve(error=Unavailable("the service is shutting down"))
        try:
            self.worker.close(failed=self.failure is not None)
        except Exception:
            log.exception("closing the engine's store failed")


def _domain(outcome: Any) -> Any:
    """A domain error as it is; any other exception as an internal error (logged here, with its traceback)."""
    if isinstance(outcome, BaseException) and not isinstance(outcome, ServiceError | CoreError):
        log.error("engine call failed", exc_info=outcome)
        return ServiceError("internal error")
    return outcome


def _settle_all(settled: list[tuple[Job, Any]]) -> None:
    """On the event loop: each job gets its answer or its error."""
    for job, outcome in settled:
        if isinstance(outcome, BaseException):
            job.settle(error=outcome)
        else:
            job.settle(outcome)
