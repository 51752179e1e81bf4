"""One micro-batch being applied, in slices, so that the engine thread serves others between them.

A slice is as many observations as fit in the time left before its deadline, at the pace the shard has
measured: each observation is costed in multiply-adds (``tbptt.models.observation_macs``: its step, and
its update when it completes a k1 segment) plus a fixed overhead. Observations go in waves (every stream's
first, then every stream's second, ...), so a request of one observation is answered after the first
slice however many observations another request in the batch brought; within a stream they stay in order.
A request is answered as soon as all of it is applied. Streams with observations still to apply are
``busy``: housekeeping leaves them alone (their whole log batch is written, not all of it applied).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tbptt.models import observation_macs

from .ingest import Plan, Planned
from .streams import StreamState

ITEM_OVERHEAD_MACS = 200_000  # the per-observation Python and numpy work, counted as multiply-adds
# Applies items of the plan and records them; told which streams have then had all of theirs.
Step = Callable[[Plan, list[int], list[StreamState]], None]


class Pace:
    """How many (estimated) multiply-adds the engine does per second here, as last measured."""

    def __init__(self, macs_per_second: float = 1e9) -> None:
        self.macs_per_second = macs_per_second  # a cautious start: the first slices come out small

    def budget(self, seconds: float) -> float:
        return max(seconds, 0.0) * self.macs_per_second

    def measured(self, macs: float, seconds: float) -> None:
        if seconds > 1e-3:  # shorter is mostly timer noise
            self.macs_per_second = 0.5 * self.macs_per_second + 0.5 * macs / seconds


class Applying:
    def __init__(self, plan: Plan, refused: dict[int, Any], step: Step, pace: Pace) -> None:
        self.plan, self._step, self._pace = plan, step, pace
        self._answered: list[tuple[Any, Any]] = list(refused.items())  # handed out by the first ``run``
        self._pending: list[Planned] = list(plan.requests)
        self._order = _waves(plan)
        self._costs = [_cost(plan, k) for k in range(len(plan.items))]
        self._next = 0  # into ``_order``
        self._left: dict[int, int] = {}  # uid -> observations of that stream not applied yet
        for state in plan.owners:
            self._left[state.uid] = self._left.get(state.uid, 0) + 1

    @property
    def done(self) -> bool:
        return not self._pending and not self._answered

    @property
    def busy(self) -> frozenset[int]:
        """The streams (uids) with observations not applied yet."""
        return frozenset(self._left)

    def run(self, deadline: float) -> list[tuple[Any, Any]]:
        """Apply slices until ``deadline`` (at least one, if anything is left); the requests answered, as
        (handle, results per part)."""
        while self._next < len(self._order):
            chunk, macs = self._slice(deadline - time.monotonic())
            finished = []
            for k in chunk:
                state = self.plan.owners[k]
                self._left[state.uid] -= 1
                if not self._left[state.uid]:
                    del self._left[state.uid]
                    finished.append(state)
            started = time.perf_counter()
            self._step(self.plan, chunk, finished)
            self._pace.measured(macs, time.perf_counter() - started)
            if time.monotonic() >= deadline:
                break
        answered, self._answered = self._answered, []
        still = []
        for request in self._pending:
            if self.plan.complete(request):
                answered.append((request.handle, self.plan.answer(request)))
            else:
                still.append(request)
        self._pending = still
        return answered

    def _slice(self, seconds: float) -> tuple[list[int], float]:
        """The next observations in wave order whose cost fits ``seconds`` (at least one)."""
        budget = self._pace.budget(seconds)
        start = end = self._next
        macs = 0.0
        while end < len(self._order) and (end == start or macs + self._costs[self._order[end]] <= budget):
            macs += self._costs[self._order[end]]
            end += 1
        self._next = end
        return sorted(self._order[start:end]), macs


def _waves(plan: Plan) -> list[int]:
    """The items in wave order: each stream's first, then each stream's second, ... (stable within)."""
    seen: dict[int, int] = {}
    position = []
    for state in plan.owners:
        position.append(seen.get(state.uid, 0))
        seen[state.uid] = position[-1] + 1
    return sorted(range(len(plan.items)), key=lambda k: position[k])


def _cost(plan: Plan, k: int) -> float:
    config = plan.owners[k].config
    assert config.k1 is not None
    # With a horizon, measured (one stream, 300 observations): 5x an item's overhead at H = 2 (each
    # observation is stepped alone), 12x at 24, 84x at 256.
    overhead = ITEM_OVERHEAD_MACS * (1 + (4 + config.horizon / 3 if config.horizon > 1 else 0))
    return overhead + observation_macs(config, plan.steps[k] % config.k1 == 0)
