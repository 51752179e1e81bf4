"""The engine thread on its own, with a worker that only records what it is given."""

from __future__ import annotations

import asyncio
import threading
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

    def open(self) -> None: ...

    def begin(self, payloads: list[Any]) -> Done:
        return Done(payloads)

    def tick(self) -> None: ...

    def close(self, failed: bool) -> None:
        self.closed = True


def test_a_stop_finishes_what_came_before_it_and_refuses_what_came_after():
    """A stop under steady load must end: what was queued after the stop is refused ("shutting down"),
    not served, or a busy server would never reach its final checkpoints within the shutdown timeout."""

    async def scenario() -> tuple[Any, BaseException | None]:
        worker = Recorder()
        engine = EngineThread(worker, 0.0, 1)
        engine.start()
        while not engine.ready:
            await asyncio.sleep(0.01)
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
        engine = EngineThread(Recorder(), 0.0, 1)
        engine.start()
        while not engine.ready:
            await asyncio.sleep(0.01)
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
