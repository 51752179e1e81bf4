"""What a shard keeps for each front of a server with several (``tbptt serve --workers M``).

Every front has its own watchers (WebSockets on /watch and /v1/anomalies/watch), but a stream's batches may
be applied through any front. So a shard keeps, per front: the streams its watchers watch, the batches
applied to those streams since the front last called (its outbox), and the tenants with new alerts. Each
answer to a front hands it its outbox, in the order applied, and a front with watchers calls while idle to
collect it. With one front this is what the single process does: the batches it applied, handed back. The
outbox also holds the answers to the front's jobs finished since it last called (service/shard_host.py).

A front that stops collecting (killed, or its loop stuck) must not hold a shard's memory: an outbox past
``OUTBOX_BATCHES`` is dropped, and the front told its watchers here fell behind (they close, as a slow
watcher does); a front silent for ``FORGET_SECONDS`` is forgotten. A front the shard does not know (it
restarted, or forgot it) is asked for its watched streams again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .streams import Key

# What watched streams got, as the single process hands to its watchers (None: the stream was deleted)
Applied = dict[Key, dict[str, Any] | None]

OUTBOX_BATCHES = 4096  # batches a front may leave uncollected (while it watches, it collects every 0.25 s at least)
FORGET_SECONDS = 30.0  # a live front calls every half second at least (its housekeeping tick)
LEASE_SECONDS = 30.0  # a creation holds the fronts' lease this long at most (thousands of streams: seconds)

# What a front is told beside its outbox
KNOWN = ""  # nothing: carry on
RESEND = "resend"  # send your watched streams again (unknown here)
BEHIND = "behind"  # your outbox overflowed: your watchers of this shard's streams fell behind


@dataclass
class _Front:
    seen: float
    watched: frozenset[Key] = frozenset()
    batches: list[Applied] = field(default_factory=list)
    alerted: set[str] = field(default_factory=set)
    behind: bool = False
    answered: list[tuple[int, Any, bool]] = field(default_factory=list)  # (job id, its answer, whether a call's)


class Outboxes:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._fronts: dict[str, _Front] = {}
        self._clock = clock
        self.watched: frozenset[Key] = frozenset()  # every front's: the batches worth building

    def visit(self, front: str, watched: frozenset[Key] | None) -> str:
        """The front called, with its watched streams if they changed (None: unchanged). ``RESEND`` if it
        is not known here and sent none."""
        known = self._fronts.get(front)
        if known is None:
            known = self._fronts[front] = _Front(self._clock())
            if watched is None:
                return RESEND
        known.seen = self._clock()
        if watched is not None and watched != known.watched:
            known.watched = watched
            self._union()
        return KNOWN

    def applied(self, batches: dict[Key, dict[str, Any]]) -> None:
        """Each front gets the batches of the streams it watches; one too far behind, none from now on."""
        for known in self._fronts.values():
            if not known.watched:
                continue
            mine = {key: batch for key, batch in batches.items() if key in known.watched}
            if mine:
                self._put(known, mine)

    def _put(self, known: _Front, batches: dict[Key, Any]) -> None:
        known.batches.append(batches)
        if len(known.batches) > OUTBOX_BATCHES:
            known.batches.clear()
            known.watched, known.behind = frozenset(), True
            self._union()

    def gone(self, key: Key, but: str | None) -> None:
        """The stream was deleted (through ``but``, which closed its own watchers): each other front that
        watches it gets ``{key: None}``, its watchers' goodbye."""
        for front, known in self._fronts.items():
            if front != but and key in known.watched:
                self._put(known, {key: None})

    def alerted(self, tenants: Iterable[str]) -> None:
        for known in self._fronts.values():
            known.alerted.update(tenants)

    def answer(self, front: str, job: int, outcome: Any, call: bool) -> None:
        """The answer to ``front``'s job ``job`` (a request's results, or a call's (value, error) if ``call``),
        until it collects it; a front forgotten here (killed) gets none."""
        known = self._fronts.get(front)
        if known is not None:
            known.answered.append((job, outcome, call))

    def collect(self, front: str) -> tuple[list[tuple[int, Any, bool]], list[Applied], list[str], str]:
        """The front's outbox, emptied: the answers to its jobs, batches in the order applied, tenants with new
        alerts, and what it is told (``BEHIND``: its watchers of this shard's streams fell behind; send the
        streams watched then)."""
        known = self._fronts.get(front)
        if known is None:
            return [], [], [], RESEND
        answered, batches, alerted = known.answered, known.batches, sorted(known.alerted)
        known.answered, known.batches, known.alerted = [], [], set()
        told = BEHIND if known.behind else KNOWN
        known.behind = False
        return answered, batches, alerted, told

    def forget_silent(self) -> None:
        """Fronts silent for ``FORGET_SECONDS``: gone (killed), with what was waiting for them."""
        now = self._clock()
        silent = [front for front, known in self._fronts.items() if now - known.seen > FORGET_SECONDS]
        for front in silent:
            del self._fronts[front]
        if silent:
            self._union()

    def _union(self) -> None:
        self.watched = frozenset().union(*(known.watched for known in self._fronts.values()))


class Lease:
    """One holder at a time, for at most ``seconds`` unless it lets go first: the fronts' creations are
    serialized by it (a tenant's quotas count every shard's streams, and two creations counting at once
    could both fit). A front killed while holding it holds up the others' creations for at most that long."""

    def __init__(self, blocked_for: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._holder: str | None = None
        # After a restart this shard no longer knows who held it: nobody gets it until any lease could run out
        self._until = clock() + blocked_for

    def take(self, holder: str, seconds: float) -> float:
        """0.0: ``holder`` has it for ``seconds``; otherwise the seconds until it may be free."""
        now = self._clock()
        if self._holder != holder and now < self._until:  # (held by another, or blocked after a restart)
            return self._until - now
        self._holder, self._until = holder, now + seconds
        return 0.0

    def release(self, holder: str) -> None:
        if self._holder == holder:
            self._holder, self._until = None, self._clock()
