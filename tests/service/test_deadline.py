"""service/deadline.py: a deadline moved at every phase of a connection, enforced as asyncio.timeout's; on
asyncio's loop and on uvloop's, which the server runs.

No test waits for a deadline to *not* pass under a clock race: each moves its deadlines before its first
await, so a busy machine can only make the waits longer, never change what must happen."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from tbptt.service.deadline import moving_deadline

RUN = asyncio.run


@pytest.fixture(autouse=True, params=[asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def _loop(request, monkeypatch):
    monkeypatch.setattr(f"{__name__}.RUN", request.param)


def _run(block) -> list[dict]:
    """Run ``block`` on a fresh loop (each test: asyncio's, then uvloop's); what the loop's exception handler was
    handed meanwhile."""
    errors: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        await block()
        await asyncio.sleep(0.2)  # (time for a stray timer to fire)

    RUN(main())
    return errors


@pytest.mark.parametrize("moves", [(0.05,), (300.0, 0.05)], ids=["one", "a nearer one after a farther one"])
def test_the_last_deadline_set_raises_timeout_out_of_the_block_when_it_passes(moves):
    async def block() -> None:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            async with moving_deadline() as deadline:
                for seconds in moves:
                    deadline.move(seconds)
                await asyncio.sleep(30)
        assert time.monotonic() - start < 30

    assert _run(block) == []


@pytest.mark.parametrize("later", [None, 300.0])
def test_a_deadline_moved_on_or_lifted_before_it_passes_does_not_fire(later):
    async def block() -> None:
        async with moving_deadline() as deadline:
            deadline.move(0.05)
            deadline.move(later)  # its check still comes at 0.05 s: it finds the deadline gone or further
            await asyncio.sleep(0.3)

    assert _run(block) == []


def test_the_check_moves_with_the_deadline_until_the_deadline_passes():
    async def block() -> None:
        with pytest.raises(TimeoutError):
            async with moving_deadline() as deadline:
                deadline.move(0.05)
                deadline.move(0.2)  # later than the check: the check, when it comes, waits on
                await asyncio.sleep(30)

    assert _run(block) == []


def test_nothing_fires_after_the_block_is_left():
    async def block() -> None:
        async with moving_deadline() as deadline:
            deadline.move(0.05)

    assert _run(block) == []  # (a check on an exited timeout would raise RuntimeError in the loop)


def test_a_cancel_from_outside_is_a_cancel_not_a_timeout():
    async def block() -> None:
        async def held() -> None:
            async with moving_deadline() as deadline:
                deadline.move(300)
                await asyncio.sleep(30)

        task = asyncio.create_task(held())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert _run(block) == []
