"""A connection's deadline that moves at every phase, cheaply.

A WebSocket moves its deadline three times a message: the client's next message, none while the engine
works, the client's read of the reply. ``asyncio.Timeout.reschedule`` cancels its timer and schedules another
each time, a heap push left behind per move: ~5 us of the event loop a message, about a tenth of a message's
time in the handler (py-spy under bench.service's b)). Here moving the deadline only records it; one timer
per connection checks it when it falls due, and is moved only when it fires before the deadline (the
deadline moved on meanwhile) or a nearer deadline is set. A passed deadline fires the ``asyncio.timeout``
inside (``Timeout.reschedule`` to now), so cancelling the task and raising ``TimeoutError`` stay asyncio's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class MovingDeadline:
    def __init__(self, timeout: asyncio.Timeout) -> None:
        self._timeout, self._loop = timeout, asyncio.get_running_loop()
        self._due: float | None = None  # (loop time; None: no deadline now)
        self._check: asyncio.TimerHandle | None = None

    def move(self, seconds: float | None) -> None:
        """From now on the deadline is ``seconds`` from now; None: none until the next move."""
        if seconds is None:
            self._due = None  # (a check that comes meanwhile finds none and lets the timer go)
            return
        self._due = due = self._loop.time() + seconds
        if self._check is None or due < self._check.when():
            self.stop()
            self._check = self._loop.call_at(due, self._expire_if_due)

    def stop(self) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None

    def _expire_if_due(self) -> None:
        self._check = None
        if self._due is None:
            return
        now = self._loop.time()
        if self._due <= now:
            self._timeout.reschedule(now)
        else:  # moved on since this check was set
            self._check = self._loop.call_at(self._due, self._expire_if_due)


@contextlib.asynccontextmanager
async def moving_deadline() -> AsyncIterator[MovingDeadline]:
    """A deadline for the block, none until moved: ``TimeoutError`` out of the block when it passes."""
    async with asyncio.timeout(None) as timeout:
        deadline = MovingDeadline(timeout)
        try:
            yield deadline
        finally:
            deadline.stop()  # (no check may fire on a timeout that has exited)
