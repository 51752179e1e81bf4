"""The order in which a shard's owner serves its jobs, fairly between tenants.

Jobs are served in the order they came: calls one by one, consecutive observation jobs as one batch
(micro-batching: streams that arrive together are stepped together), which the worker applies in slices of
about ``slice_seconds``. After a slice the owner serves whatever else has come (from other tenants) before
the next slice of an unfinished batch, and holds back the later jobs of the tenants that batch serves (their
order is kept). So a small request waits for about one slice of another tenant's work, not all of it.

Two owners run it: the engine thread of the single process (service/engine_thread.py), one round after
another, and a shard process of the sharded server (service/shard_host.py), one round per call from a front.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar


class Slices(Protocol):
    """A batch being applied: ``run`` applies slices until the deadline (at least one) and returns the
    payloads answered meanwhile, as (index in the batch, answer or exception)."""

    @property
    def done(self) -> bool: ...

    def run(self, deadline: float) -> list[tuple[int, Any]]: ...


class Scheduled(Protocol):
    """A job: a ``payload`` of observations for the worker's batch, or a ``call`` to run between batches."""

    tenant: str | None  # whose: a tenant's jobs run in order; None: anyone's (waits for nothing, holds nobody)
    payload: Any
    call: Callable[[], Any] | None
    answered: bool  # its tenant's next jobs need not wait for its batch


J = TypeVar("J", bound=Scheduled)


class Schedule(Generic[J]):
    def __init__(
        self, begin: Callable[[list[Any]], Slices], answer: Callable[[list[tuple[J, Any]]], None],
        failed: Callable[[list[J], Exception], None], slice_seconds: float,
    ) -> None:  # fmt: skip
        """``begin``: the worker's start of a batch of payloads; ``answer``: jobs answered together (with a
        value, or the exception that refused them); ``failed``: a batch's jobs when the worker raised (it
        may hold half of it: the owner must stop taking work)."""
        self._begin_batch, self._answer, self._failed = begin, answer, failed
        self.slice_seconds = slice_seconds
        self.waiting: list[J] = []  # come, not served yet (some held back behind their tenant's batch)
        self.running: list[tuple[Slices, list[J]]] = []  # batches not wholly applied, with their jobs
        self._deferred = False  # the last round left the unfinished batches' slices to this one

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def add(self, job: J) -> None:
        self.waiting.append(job)

    def round(self) -> None:
        """The waiting jobs that may go, then one more slice of every unfinished batch.

        A round that served new jobs leaves the batches left unfinished before it to the next round, unless
        the round before did so too: a shard answers a round's jobs when the round ends, so a small request
        then waits for its own slice, not for one more of another tenant's heavy batch as well, and an
        unfinished batch still gets a slice every other round at least."""
        unfinished = len(self.running)
        if self._process() and unfinished and not self._deferred:
            self._deferred = True
            return
        self._deferred = False
        running, self.running = self.running, []
        for slices, jobs in running:
            if not self._slice(slices, jobs):
                self.running.append((slices, jobs))

    def drain(self) -> list[J]:
        """Every job waiting or running, taken out (those answered already included)."""
        jobs = [*self.waiting, *(job for _, jobs in self.running for job in jobs)]
        self.waiting, self.running = [], []
        return jobs

    def _busy(self) -> set[str | None]:
        """The tenants with a request in an unfinished batch that is not answered yet."""
        return {job.tenant for _, jobs in self.running for job in jobs if job.tenant is not None and not job.answered}

    def _process(self) -> bool:
        """The waiting jobs of tenants with no unfinished batch, in order: calls one by one, consecutive
        observation jobs as one batch. A batch left unfinished holds back its tenants' later jobs. Whether
        any job was served."""
        busy = self._busy()
        held: list[J] = []
        batch: list[J] = []
        for job in self.waiting:
            if job.tenant in busy:
                held.append(job)
                continue
            if job.call is None:
                batch.append(job)
                continue
            if batch:
                busy |= self._begin(batch)
                batch = []
                if job.tenant in busy:
                    held.append(job)
                    continue
            try:
                value = job.call()
            except Exception as exc:
                value = exc
            self._answer([(job, value)])
        if batch:
            self._begin(batch)
        served = len(held) < len(self.waiting)
        self.waiting = held
        return served

    def _begin(self, jobs: list[J]) -> set[str | None]:
        """Start a batch and run its first slice; the tenants it still holds."""
        try:
            slices = self._begin_batch([job.payload for job in jobs])
        except Exception as exc:
            self._failed(jobs, exc)
            return set()
        if self._slice(slices, jobs):
            return set()
        self.running.append((slices, jobs))
        return {job.tenant for job in jobs if job.tenant is not None and not job.answered}

    def _slice(self, slices: Slices, jobs: list[J]) -> bool:
        """Run one slice and answer what it finished, together; whether the batch is done."""
        try:
            answered = slices.run(time.monotonic() + self.slice_seconds)
        except Exception as exc:
            self._failed(jobs, exc)
            return True
        if answered:
            for k, _ in answered:
                jobs[k].answered = True
            self._answer([(jobs[k], outcome) for k, outcome in answered])
        return slices.done
