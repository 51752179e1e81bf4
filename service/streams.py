"""A stream as the service sees it: the engine's model plus ids, sequence numbers and recent results.

``StreamState`` is owned by the engine thread; ``StreamInfo`` is the immutable snapshot of it that crosses to
the event loop (routes build their response schemas from it)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tbptt.models import Columns, Results
from tbptt.models import StreamConfig as CoreConfig

from .results import ResultLog
from .runs import Run

Key = tuple[str, str]  # (tenant, stream id)
NAN = float("nan")
# A stream's results of a batch are appended one at a time up to this many, as arrays beyond: measured per
# observation (500 streams, record_results alone, their rings new), 2 a stream 6.1 us as arrays -> 3.0 one at
# a time, 4 3.4 -> 2.0, 8 2.1 -> 1.5, 16 1.4 -> 1.2, 32 1.2 -> 1.4 (cross-stream batches give each stream a few)
APPENDED_ROWS = 16


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's identity, config and counters at one moment."""

    id: str
    config: CoreConfig
    steps: int  # observations applied
    updates: int
    last_seq: int | None
    duplicates: int
    created_at: str  # ISO 8601, UTC
    incarnation: int  # this stream's uid in the store: a stream deleted and created again is another one
    labels: dict[str, str]
    anomaly_episodes: int = 0  # alert episodes its anomalies opened (service/episodes.py)


@dataclass
class StreamState:
    uid: int  # this incarnation in the store
    tenant: str
    id: str
    config: CoreConfig
    created_at: str
    results: ResultLog
    labels: dict[str, str] = field(default_factory=dict)
    last_seq: int | None = None
    last_ts: float | None = None  # the newest observation timestamp applied (Unix seconds)
    steps: int = 0  # observations applied
    updates: int = 0
    duplicates: int = 0
    events: int = 0  # resets and imports logged after observation ``steps`` (they order the log)
    last_alert: int | None = None  # the step of its newest alert (service/alerts.py) ...
    episode: int | None = None  # ... and of the alert that opened that alert's episode
    episodes: int = 0  # alert episodes opened (since the checkpoint it was restored from kept the count)
    loaded: bool = False  # in the engine (else evicted: the newest checkpoint holds it all)
    checkpoint_step: int = -1  # steps at the last checkpoint (-1: none yet)
    checkpoint_events: int = 0
    checkpoint_updates: int = 0
    checkpoint_time: float = field(default_factory=time.monotonic)
    pending: tuple[int, int, int] | None = None  # (steps, events, updates) of a checkpoint being written
    last_active: float = field(default_factory=time.monotonic)
    created_mark: int = 0  # the last log batch before its history (its creation; its first record's, if fed after)
    newest_mark: int = 0  # the log batch of the newest checkpoint (or of the creation)
    fallback_mark: int = 0  # recovery may need the log after this batch (the older checkpoint's)
    fallback_state: tuple[int, int] = (0, 0)  # (steps, events) the older checkpoint holds (creation: (0, 0))
    runs: list[Run] = field(default_factory=list)  # its results' runs in the store (service/runs.py) ...
    pending_runs: list[Run] | None = None  # ... and what they are once the checkpoint being written is committed
    damaged: str | None = None  # why it cannot be restored, if so
    # no record of it logged yet (an observation or an event; its row's ``fed`` says so after a restart): it is as
    # created, steps and events 0
    fresh: bool = False
    state_bytes: int = 0  # the memory it may hold (model state and a full result log): the tenant's budget

    key: str = field(init=False)  # the engine's id: namespaced per tenant (ids cannot hold '/')
    origin: CoreConfig = field(init=False)  # the config it was created with (PATCHes since are logged events)

    def __post_init__(self) -> None:
        self.key = f"{self.tenant}/{self.id}"
        self.origin = self.config

    @property
    def dirty(self) -> bool:
        """Changed since its last checkpoint. A ``fresh`` stream never is: its state is what its config and seed
        make, so it needs neither a checkpoint nor the log (63 KiB a stream of 8 inputs, written for every stream
        of a fleet created in advance, fed or not, in its first period)."""
        return (self.steps != self.checkpoint_step or self.events != self.checkpoint_events) and not self.fresh

    @property
    def needs_log(self) -> bool:
        """Whether recovering it might need the log after ``fallback_mark``: not when both its checkpoints
        hold its current state (a quiet stream, once its newest checkpoint is copied)."""
        return self.dirty or self.fallback_state != (self.steps, self.events)

    @property
    def counters(self) -> tuple[int, int, int]:
        """What a checkpoint taken now holds: (steps, events, updates)."""
        return (self.steps, self.events, self.updates)

    def checkpointed(self, mark: int, held: tuple[int, int, int]) -> None:
        """A checkpoint of the state with these ``counters`` was committed, its snapshot taken after log batch
        ``mark``."""
        self.fallback_state = (max(self.checkpoint_step, 0), self.checkpoint_events)
        self.fallback_mark, self.newest_mark = self.newest_mark, mark
        self.checkpoint_step, self.checkpoint_events, self.checkpoint_updates = held
        self.checkpoint_time = time.monotonic()

    def fed(self, batch: int) -> None:
        """Its first record was logged in ``batch`` (the store marked it fed in the same transaction): its history
        starts there, wherever the log was trimmed to while it had none."""
        self.fresh = False
        self.created_mark = self.newest_mark = self.fallback_mark = batch - 1

    @property
    def tenant_key(self) -> Key:
        return (self.tenant, self.id)

    def info(self) -> StreamInfo:
        return StreamInfo(
            self.id, self.config, self.steps, self.updates, self.last_seq, self.duplicates, self.created_at, self.uid,
            dict(self.labels), self.episodes,
        )  # fmt: skip


def record_results(
    owners: list[StreamState], seqs: list[int], results: Results, items: Sequence[Sequence[Any]],
    stamps: Sequence[float | None],
) -> None:  # fmt: skip
    """Per stream: the new last seq, timestamp, step and update counts, and the results kept with their
    observations. Item k of ``results`` is what observation ``seqs[k]`` of ``owners[k]`` got, applied as
    ``items[k]`` = (key, x, y, ...) with timestamp ``stamps[k]``, in order within each stream."""
    now = time.monotonic()
    for part in results.parts:  # a stream's items are all in its fleet's part
        runs: dict[int, list[int]] = {}  # per stream, its rows in the part
        for row, item in enumerate(part.items):
            run = runs.get(id(owners[item]))
            if run is None:
                runs[id(owners[item])] = [row]
            else:
                run.append(row)
        # the part's results as their logs keep them, one record each (one per shape: a fleet's streams share it)
        kept: dict[np.dtype, np.ndarray] = {}
        steps, updated = part.steps.tolist(), part.updated.tolist()
        for rows in runs.values():
            last = rows[-1]
            k = part.items[last]
            state = owners[k]
            state.last_seq, state.steps, state.events, state.last_active = seqs[k], steps[last], 0, now
            for row in rows:
                ts = stamps[part.items[row]]
                if ts is not None:
                    state.last_ts = ts
                state.updates += updated[row]
            log = state.results
            records = kept.get(log.dtype)
            if records is None:
                records = kept[log.dtype] = _records(part, log, seqs, items, stamps)
            if len(rows) <= APPENDED_ROWS:
                for row in rows:
                    log.put_one(records[row])
            else:
                log.put(records[rows])


def _records(
    part: Columns, log: ResultLog, seqs: list[int], items: Sequence[Sequence[Any]], stamps: Sequence[float | None]
) -> np.ndarray:
    """Every row of ``part`` as a record of ``log``'s type: its result, with the observation that got it."""
    ks, none = part.items, [NAN] * log.targets
    return log.records(
        [seqs[k] for k in ks], part.steps, part.predictions, part.losses, part.updated, part.scores, part.intervals,
        part.forecasts, part.forecast_intervals, [NAN if (ts := stamps[k]) is None else ts for k in ks],
        [items[k][1] for k in ks], [none if items[k][2] is None else items[k][2] for k in ks] if log.targets else None,
        part.anomalous,
    )  # fmt: skip
