"""A stream as the service sees it: the engine's model plus ids, sequence numbers and recent results.

``StreamState`` is owned by the engine thread; ``StreamInfo`` is the immutable snapshot of it that crosses to
the event loop (routes build their response schemas from it)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from tbptt.models import StepResult
from tbptt.models import StreamConfig as CoreConfig

from .results import ResultLog

Key = tuple[str, str]  # (tenant, stream id)


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


@dataclass
class StreamState:
    uid: int  # this incarnation in the store
    tenant: str
    id: str
    config: CoreConfig
    created_at: str
    results: ResultLog
    last_seq: int | None = None
    steps: int = 0  # observations applied
    updates: int = 0
    duplicates: int = 0
    events: int = 0  # resets and imports logged after observation ``steps`` (they order the log)
    loaded: bool = False  # in the engine (else evicted: the newest checkpoint holds it all)
    checkpoint_step: int = -1  # steps at the last checkpoint (-1: none yet)
    checkpoint_events: int = 0
    checkpoint_updates: int = 0
    checkpoint_time: float = field(default_factory=time.monotonic)
    pending: tuple[int, int, int] | None = None  # (steps, events, updates) of a checkpoint being written
    last_active: float = field(default_factory=time.monotonic)
    created_mark: int = 0  # the last log batch before the stream existed
    newest_mark: int = 0  # the log batch of the newest checkpoint (or of the creation)
    fallback_mark: int = 0  # recovery may need the log after this batch (the older checkpoint's)
    fallback_state: tuple[int, int] = (0, 0)  # (steps, events) the older checkpoint holds (creation: (0, 0))
    damaged: str | None = None  # why it cannot be restored, if so
    state_bytes: int = 0  # the memory it may hold (model state and a full result log): the tenant's budget

    key: str = field(init=False)  # the engine's id: namespaced per tenant (ids cannot hold '/')

    def __post_init__(self) -> None:
        self.key = f"{self.tenant}/{self.id}"

    @property
    def dirty(self) -> bool:
        """Changed since its last checkpoint."""
        return (self.steps, self.events) != (self.checkpoint_step, self.checkpoint_events)

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

    @property
    def tenant_key(self) -> Key:
        return (self.tenant, self.id)

    def info(self) -> StreamInfo:
        return StreamInfo(
            self.id, self.config, self.steps, self.updates, self.last_seq, self.duplicates, self.created_at, self.uid
        )


def _no_band(outputs: int) -> list[list[float]]:
    return [[math.nan, math.nan]] * outputs


def record_results(owners: list[StreamState], seqs: list[int], results: list[StepResult]) -> None:
    """Per stream: the new last seq, step and update counts, and the results kept for duplicates.
    ``results[k]`` is what observation ``seqs[k]`` of ``owners[k]`` got, in order within each stream."""
    now = time.monotonic()
    runs: dict[int, list[int]] = {}
    for k, state in enumerate(owners):
        run = runs.get(id(state))
        if run is None:
            runs[id(state)] = [k]
        else:
            run.append(k)
    for ks in runs.values():
        state = owners[ks[0]]
        last = results[ks[-1]]
        state.last_seq, state.steps, state.events, state.last_active = seqs[ks[-1]], last.step, 0, now
        if len(ks) == 1:
            state.updates += last.updated
            state.results.append(
                seqs[ks[0]], last.step, last.prediction, last.loss, last.updated, last.anomaly, last.interval
            )
            continue
        rs = [results[k] for k in ks]
        state.updates += sum(r.updated for r in rs)
        state.results.extend(
            np.array([seqs[k] for k in ks], dtype=np.int64),
            np.array([r.step for r in rs], dtype=np.int64),
            np.array([r.prediction for r in rs], dtype=np.float64),
            np.array([np.nan if r.loss is None else r.loss for r in rs], dtype=np.float64),
            np.array([r.updated for r in rs], dtype=bool),
            np.array([np.nan if r.anomaly is None else r.anomaly for r in rs], dtype=np.float64),
            np.array([_no_band(len(r.prediction)) if r.interval is None else r.interval for r in rs], dtype=np.float64),
        )
