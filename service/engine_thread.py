"""The engine thread: one thread that owns all model state, and the bridge to it from the event loop.

The event loop never runs tensor code: it submits a job and awaits its future. The thread takes whatever has
queued up: calls run one by one, in order; consecutive observation jobs between them go to the worker as
one batch (micro-batching: streams that arrive together are stepped together). Between batches, and every
``TICK_SECONDS`` while idle, the worker does its housekeeping. The thread knows nothing about streams: what
a batch means is the worker's business (``Shard``).

Fairness: the worker applies a batch in slices of about ``slice_seconds`` and answers each request when all
of it is applied; between slices the thread serves other tenants (service/scheduling.py, which a shard
process of the sharded server runs too).
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
from .scheduling import Schedule, Slices

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5  # the longest the worker's housekeeping waits while no work comes
RECOVERING_RETRY_AFTER = 1  # seconds a client is told to wait while the service recovers


@dataclass(slots=True)
class Job:
    """One request: a ``payload`` of observations for the worker, or a ``call`` to run on the thread."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    tenant: str | None  # whose: a tenant's jobs run in order; None: anyone's (waits for nothing, holds nobody)
    payload: Any = None
    call: Callable[[], Any] | None = None
    answered: bool = False  # set on the engine thread: its tenant's next jobs need not wait for its batch

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        """From the engine thread."""
        self.loop.call_soon_threadsafe(self.settle, value, error)

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """On the event loop."""
        settle(self.future, value, error)


class Worker(Protocol):
    """What the engine thread runs: all of it on that thread."""

    def open(self) -> None: ...  # before the first job: open the store, recover

    def begin(self, payloads: list[Any]) -> Slices: ...  # a batch, to apply in slices

    # housekeeping, between batches and when idle; ``idle()``: whether nothing waits for the thread now
    def tick(self, idle: Callable[[], bool]) -> None: ...

    def close(self, failed: bool) -> None: ...  # after the last job (final checkpoints unless failed)


class EngineThread:
    def __init__(
        self, worker: Worker, batch_wait_seconds: float, torch_threads: int, slice_seconds: float = 0.05
    ) -> None:
        self.worker = worker
        self.ready = False
        self.failure: BaseException | None = None
        self._batch_wait = batch_wait_seconds
        # Whether the last batch found more than one observation job waiting: only then does the next one wait
        # for company. A lone client that posts, awaits and posts again never has any, and waiting would only
        # add to each of its round trips (measured: bench/README.md, "Waiting for company").
        self._crowded = False
        self._torch_threads = torch_threads
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._stopped = threading.Event()
        self._schedule: Schedule[Job] = Schedule(worker.begin, _answer, self._failed, slice_seconds)

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

    async def call(self, tenant: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the engine thread, between batches, after ``tenant``'s earlier jobs; its result
        or its error."""
        loop = asyncio.get_running_loop()
        return await self._submit(Job(loop, loop.create_future(), tenant, call=lambda: fn(*args)))

    async def observe(self, tenant: str | None, payload: Any) -> Any:
        """Hand ``payload`` to the worker's next batch; what the worker answers it with."""
        loop = asyncio.get_running_loop()
        return await self._submit(Job(loop, loop.create_future(), tenant, payload=payload))

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
        stopping = False
        while True:
            if self._schedule.idle:
                if stopping:
                    return
                try:
                    job = self._jobs.get(timeout=TICK_SECONDS)
                except queue.Empty:
                    self.worker.tick(self._idle)
                    continue
                if job is None:
                    stopping = True  # finish what is running and queued first
                    continue
                self._schedule.add(job)
                if self._batch_wait and job.call is None and self._crowded:
                    time.sleep(self._batch_wait)  # let concurrent observations join this batch: the sleep hands
                    # the interpreter lock to the event loop, which parses the requests already on their way
            if not stopping:  # what came after the stop sentinel is refused at shutdown, not served
                stopping = self._take()
            self._crowded = sum(job.call is None for job in self._schedule.waiting) > 1
            self._schedule.round()
            if self.failure is not None:  # what waits or runs will never be served: say so now
                self._refuse_all("internal error: the service must be restarted")
            self.worker.tick(self._idle)

    def _idle(self) -> bool:
        """Nothing waits for this thread (housekeeping may then go past its budget)."""
        return self._schedule.idle and self._jobs.empty()

    def _take(self) -> bool:
        """What is queued, after what waits already, up to the stop sentinel; whether it came."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            self._schedule.add(job)

    def _failed(self, jobs: list[Job], exc: Exception) -> None:
        """A bug must not leave requests hanging: the worker may hold half a batch, so the service then stops
        taking work (503) and a restart recovers exactly from the log."""
        self.failure = exc
        log.error("an engine batch failed; refusing work until restarted", exc_info=exc)
        for job in jobs:
            job.resolve(error=Unavailable("internal error: the service must be restarted"))

    def _refuse_all(self, why: str) -> None:
        """Every waiting and running job (those already answered stay answered)."""
        for job in self._schedule.drain():
            job.resolve(error=Unavailable(why))

    def _shutdown(self) -> None:
        self._stopped.set()
        self._refuse_all("the service is shutting down")
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


def settle(future: asyncio.Future, value: Any = None, error: BaseException | None = None) -> None:
    """On the event loop: a request's answer, unless its client went away."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _answer(answered: list[tuple[Job, Any]]) -> None:
    """From the engine thread: jobs answered together, in one wake-up of the event loop."""
    settled = [(job, _domain(outcome)) for job, outcome in answered]
    answered[0][0].loop.call_soon_threadsafe(_settle_all, settled)


def _settle_all(settled: list[tuple[Job, Any]]) -> None:
    """On the event loop: each job gets its answer or its error."""
    for job, outcome in settled:
        if isinstance(outcome, BaseException):
            job.settle(error=outcome)
        else:
            job.settle(outcome)
