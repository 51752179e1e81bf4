"""The engine thread on its own, with a worker that only records what it is given."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tbptt.service.engine_thread import EngineThread
from tbptt.service.errors import Unavailable


class Done:
    done = True

    def __init__(self, payloads: list[Any]) -> None:
        self.payloads = payloads

    def run(self, deadline: float) -> list[tuple[int, Any]]:
        return [(k, f"applied {p}") for k, p in enumerate(self.payloads)]


class Recorder:
    def __init__(self) -> None:
        self.closed = False
        self.batches: list[list[Any]] = []

    def open(self) -> None: ...

    def begin(self, payloads: list[Any]) -> Done:
        self.batches.append(payloads)
        return Done(payloads)

    def tick(self, idle: Callable[[], bool]) -> None: ...

    def close(self, failed: bool) -> None:
        self.closed = True


async def _started(engine: EngineThread) -> EngineThread:
    engine.start()
    while not engine.ready:
        await asyncio.sleep(0.01)
    return engine


def test_a_stop_finishes_what_came_before_it_and_refuses_what_came_after():
    """A stop under steady load must end: what was queued after the stop is refused ("shutting down"),
    not served, or a busy server would never reach its final checkpoints within the shutdown timeout."""

    async def scenario() -> tuple[Any, BaseException | None]:
        worker = Recorder()
        engine = await _started(EngineThread(worker, 0.0, 1))
        gate = threading.Event()
        blocked = asyncio.ensure_future(engine.call(None, gate.wait, 30))
        await asyncio.sleep(0.1)  # the thread is inside the call
        before = asyncio.ensure_future(engine.observe("t", "before"))
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(engine.stop(30))
        await asyncio.sleep(0.05)
        after = asyncio.ensure_future(engine.observe("t", "after"))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(blocked, stopping)
        result = await before
        error = None
        try:
            await after
        except Unavailable as exc:
            error = exc
        assert worker.closed
        return result, error

    result, error = asyncio.run(scenario())
    assert result == "applied before"
    assert isinstance(error, Unavailable) and "shutting down" in str(error)


@pytest.mark.parametrize("tenant", ["t", None])
def test_calls_and_observations_of_a_tenant_keep_their_order(tenant):
    async def scenario() -> list[Any]:
        engine = await _started(EngineThread(Recorder(), 0.0, 1))
        seen: list[str] = []
        jobs = [
            engine.call(tenant, seen.append, "call 1"),
            engine.observe(tenant, "one"),
            engine.call(tenant, seen.append, "call 2"),
        ]
        results = await asyncio.gather(*jobs)
        await engine.stop(30)
        return [seen, results[1]]

    seen, observed = asyncio.run(scenario())
    assert seen == ["call 1", "call 2"] and observed == "applied one"


class Slow:
    """Answers every payload but "long" at its first slice; "long" after ``slices`` slices of 20 ms."""

    def __init__(self, payloads: list[Any], slices: int) -> None:
        self.payloads, self.left, self.started = payloads, slices, False

    @property
    def done(self) -> bool:
        return self.started and self.left == 0

    def run(self, deadline: float) -> list[tuple[int, Any]]:
        threading.Event().wait(0.02)
        answered = [] if self.started else [(k, p) for k, p in enumerate(self.payloads) if p != "long"]
        self.started, self.left = True, self.left - 1
        if self.left == 0 and "long" in self.payloads:
            answered.append((self.payloads.index("long"), "long"))
        return answered


class SlowWorker(Recorder):
    def begin(self, payloads: list[Any]) -> Slow:  # type: ignore[override]
        return Slow(payloads, 50 if "long" in payloads else 1)


def test_a_tenant_answered_in_another_tenants_unfinished_batch_is_not_held_behind_it():
    """Tenant b's request shared a batch with tenant a's long one and was answered in its first slice; b's
    next request must not wait for the rest of a's batch (it once did: 18 s behind a 300-observation LSTM)."""

    async def scenario() -> list[str]:
        engine = await _started(EngineThread(SlowWorker(), 0.0, 1))
        gate = threading.Event()
        blocked = asyncio.ensure_future(engine.call(None, gate.wait, 30))
        await asyncio.sleep(0.1)  # the thread is inside the call: the next two queue up into one batch
        order: list[str] = []
        long = asyncio.ensure_future(engine.observe("a", "long"))
        long.add_done_callback(lambda _: order.append("long"))
        first = asyncio.ensure_future(engine.observe("b", "first"))
        await asyncio.sleep(0.05)
        gate.set()
        await first
        await engine.observe("b", "second")
        order.append("second")
        await asyncio.gather(blocked, long)
        await engine.stop(30)
        return order

    assert asyncio.run(scenario()) == ["second", "long"]


def test_a_lone_client_does_not_wait_for_company():
    """A client that posts, awaits the answer and posts again has no one to batch with: a batch wait must not
    be added to each of its round trips. With a 30 s wait, one wait would overrun the 20 s bound."""

    async def scenario() -> list[list[Any]]:
        worker = Recorder()
        engine = await _started(EngineThread(worker, 30.0, 1))
        for k in range(3):
            await asyncio.wait_for(engine.observe("t", k), 20)
        await engine.stop(30)
        return worker.batches

    assert asyncio.run(scenario()) == [[0], [1], [2]]


def test_once_clients_overlap_an_observation_waits_for_the_next_to_join_its_batch():
    """Two observations queued together show concurrent clients: the next observation to find the engine idle
    waits (1 s here) for company, and one sent 50 ms after it shares its batch."""

    async def scenario() -> list[list[Any]]:
        worker = Recorder()
        engine = await _started(EngineThread(worker, 1.0, 1))
        gate = threading.Event()
        blocked = asyncio.ensure_future(engine.call(None, gate.wait, 30))
        await asyncio.sleep(0.1)  # the thread is inside the call: the next two queue up together
        together = asyncio.gather(engine.observe("t", "a"), engine.observe("u", "b"))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(blocked, together)
        first = asyncio.ensure_future(engine.observe("t", "c"))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, engine.observe("u", "d"))
        await engine.stop(30)
        return worker.batches

    assert asyncio.run(scenario()) == [["a", "b"], ["c", "d"]]
