"""Durability of a shard's streams: log records of resets and imports, checkpoints, eviction, log trims,
and recovery (newest valid checkpoint + replay of the log after it).

Every stream remembers three log marks: ``created_mark`` (the last batch before it existed), and the
batches of its newest and of its older (fallback) checkpoint. Recovery may need the log after any
stream's fallback mark, so the log is trimmed up to the smallest of them, among the streams that may need
it: a stream that has gone quiet gets a second copy of its newest checkpoint, and then needs no log at all
(else one quiet stream would keep the whole log of every other stream forever).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from tbptt.models import CoreError, Engine, InvalidObservation
from tbptt.models import StreamConfig as CoreConfig

from .alerts import AlertFeed, alerts_of
from .checkpoint import pack_many, summary, unpack
from .checkpoint_writer import CheckpointWriter, Job
from .errors import ServiceError, StorageFull, Unavailable
from .modelfile import read_weights
from .registry import StreamRegistry
from .results import ResultLog
from .runs import unwritten_from
from .settings import Settings
from .store import CorruptLog, Event, Observations, Store, StoreUnavailable
from .streams import StreamState, record_results
from .telemetry import Telemetry

log = logging.getLogger(__name__)

# Short passes, often: a pass's checkpoints hold requests up, so five passes of a fifth hold them up a fifth as long
# (10,000 streams at a reading a minute each: p99 41 -> 18 ms; 1,000: 15-20 -> 11-13 ms; bench/README.md).
HOUSEKEEPING_SECONDS = 0.1  # how often: due checkpoints, evictions, log trims
HOUSEKEEPING_BUDGET = 0.02  # seconds of checkpointing and evicting per pass: requests wait meanwhile ...
WRITER_BACKLOG = 64 << 20  # ... unless none waits: then on, while the writer holds less than this of snapshots
CHECKPOINT_GROUP = 64  # streams checkpointed per transaction at most ...
GROUP_BYTES = 16 << 20  # ... and about this much state: a pass stays within its budget with large streams
SWEEP_STREAMS = 400  # streams a pass looks at: a larger fleet is swept over several passes (see ``housekeeping``)
REPLAY_CHUNK = 20_000  # observations per engine call while recovering
RELEASED_BYTES = 64 << 20  # kept results that left memory (held in runs) before the heap is trimmed


def stream_bytes(config: CoreConfig, settings: Settings) -> int:
    """The memory a stream of this config may hold: its state in the engine and a full result log."""
    assert config.output_size is not None
    return _engine_bytes(config.fleet_key) + ResultLog.of(settings.results_retained, config).full_bytes


@functools.lru_cache(maxsize=1024)
def _engine_bytes(fleet_key: CoreConfig) -> int:
    """Per architecture, once: recovery asks for every stream, and most share a few configs."""
    return Engine.state_bytes(fleet_key)


def phase(uid: int) -> float:
    """Where in ``TBPTT_CHECKPOINT_SECONDS`` a stream's timed checkpoints fall, in [0, 1): spread evenly over
    consecutive uids (the golden ratio's fractions). Streams registered together (all of them at a restart,
    or a fleet created at once) would otherwise all be due in the same pass, every period from then on: a
    wave of checkpoints that holds requests up for its passes' budgets (measured: p99 121-149 ms at a steady
    state of 1,000 streams, bench/README.md, against about 10 ms between waves)."""
    return (uid * 0.6180339887498949) % 1.0


def never() -> bool:
    """Nothing waits? Never known: housekeeping keeps to its budget (a worker of a shard process)."""
    return False


class Durability:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: Store,
        writer: CheckpointWriter,
        registry: StreamRegistry,
        telemetry: Telemetry,
        alerts: AlertFeed,
    ) -> None:
        self.settings, self.engine, self.store, self.registry = settings, engine, store, registry
        self.writer, self.telemetry, self.alerts = writer, telemetry, alerts
        self._trimmed = 0  # log batches up to here are gone
        self._housekept = 0.0
        self._unfinished = False  # the last pass left work for later
        self._sweep: list[StreamState] = []  # the registry as the current sweep found it ...
        self._swept = 0  # ... and how much of it the passes have looked at
        self._released = 0  # bytes of kept results that left memory since it was last handed back to the OS

    def new_state(self, uid: int, tenant: str, stream: str, config: CoreConfig, created_at: str) -> StreamState:
        results = ResultLog.of(self.settings.results_retained, config)
        results.older = functools.partial(self.store.runs, uid)
        state = StreamState(uid, tenant, stream, config, created_at, results)
        state.state_bytes = stream_bytes(config, self.settings)
        state.checkpoint_time -= phase(uid) * self.settings.checkpoint_seconds
        return state

    def write(self, action: Callable[[Store], Any]) -> Any:
        """A store write; a refused one is a 507 (nothing was written)."""
        try:
            return action(self.store)
        except StoreUnavailable as exc:
            self.telemetry.write_failed()
            raise StorageFull(str(exc)) from exc

    # -- events: resets and imports, logged between the observations they come after ------------------------

    def log_event(self, state: StreamState, kind: str, payload: bytes, labels: str | None = None) -> None:
        """Log a reset, an import or a change of config (with the stream's new ``labels``, JSON, if they
        change too) after the stream's last observation."""
        event = Event(state.uid, state.steps, state.events + 1, kind, payload)
        self.append([state], event, labels=None if labels is None else (state.uid, labels))
        state.events += 1

    def append(
        self, states: Iterable[StreamState], batch: Observations | Event, duplicates: dict[int, int] | None = None,
        labels: tuple[int, str] | None = None,
    ) -> int:  # fmt: skip
        """Log ``batch``, whose records are those of ``states`` (``Store.append``); those that had none logged yet
        are marked fed in the same transaction. Its batch number."""
        first = list({st.uid: st for st in states if st.fresh}.values())  # (each once)
        number = self.write(lambda s: s.append(batch, duplicates, labels, [st.uid for st in first]))
        for state in first:
            state.fed(number)
        return number

    def apply_event(self, state: StreamState, kind: str, payload: bytes) -> None:
        if kind == "reset":
            if payload[0]:
                self.engine.reset_hidden(state.key)
            if payload[1]:
                self.engine.reset_weights(state.key)
        elif kind == "config":  # a PATCH: the settings apply from the next observation
            config = CoreConfig.from_dict(json.loads(payload))
            self.engine.reconfigure(state.key, config)
            state.config = config
            state.results.threshold = config.anomaly_threshold
        else:
            self.engine.import_weights(state.key, read_weights(payload, state.config))

    # -- loading, checkpoints, eviction --------------------------------------------------------------------

    def load(self, state: StreamState) -> int:
        """Into the engine from the newest valid checkpoint (or fresh); nothing is replayed here. The log batch
        after which the state loaded may lack records."""
        for checkpoint in self.store.checkpoints(state.uid):
            try:
                unpack(checkpoint.data, self.engine, state)
            except ValueError as exc:
                log.error(
                    "checkpoint of %s at step %d unusable (%s): trying an older one", state.key, checkpoint.step, exc
                )
                continue
            state.checkpoint_step, state.checkpoint_events = checkpoint.step, checkpoint.ord
            state.checkpoint_updates = state.updates
            state.loaded = True
            return checkpoint.mark
        if state.created_mark < self._trimmed and not state.fresh:  # its early log is gone: a fresh start would
            # be a silent reset (not for a stream never fed: it has no history)
            state.damaged = f"stream {state.id!r} cannot be restored: its checkpoints are unreadable"
            log.error(state.damaged)
            raise Unavailable(state.damaged)
        state.config = state.origin  # from its creation: the log has every change since
        state.results, state.runs = state.results.emptied(), []
        state.last_alert = state.episode = None
        state.episodes = 0
        state.results.threshold = state.origin.anomaly_threshold
        self.engine.add_stream(state.key, state.config)
        state.checkpoint_step, state.checkpoint_events, state.checkpoint_updates = 0, 0, 0
        state.loaded = True
        return state.created_mark

    def restore(self, state: StreamState) -> None:
        """An evicted stream back into the engine, exactly as it was: if its newest checkpoint turned out
        unusable (it rotted on disk since it was written), from an older one and the log after it, which is
        kept for as long as the older one may be needed (``_needed_from``)."""
        held = (state.steps, state.events, state.updates, state.last_seq, state.last_ts)
        mark = self.load(state)
        if (state.checkpoint_step, state.checkpoint_events) == held[:2]:
            return
        log.warning("%s was restored from an older checkpoint (step %d): replaying the log after it", state.key,
                    state.checkpoint_step)  # fmt: skip
        if (state.checkpoint_step, state.checkpoint_events) == (0, 0):  # afresh: the counters start over too
            state.steps = state.events = state.updates = 0
            state.last_seq = state.last_ts = None
        if mark >= self._trimmed:
            self._replay({state.uid: state}, mark)
        if (state.steps, state.events) != held[:2]:
            self.engine.remove_stream(state.key)
            state.loaded, state.results = False, state.results.emptied()
            state.steps, state.events, state.updates, state.last_seq, state.last_ts = held
            raise Unavailable(self._damage(state, f"its log after step {state.checkpoint_step} is no longer kept"))
        # the checkpoint it came from is the newest one now; the state it holds is checkpointed again soon
        state.newest_mark, state.fallback_mark = mark, min(state.fallback_mark, mark)

    def checkpoint(self, *states: StreamState, evict: bool = False) -> None:
        """Snapshot these streams for the checkpoint writer, which commits them together (those with a
        checkpoint being written are left for later). With ``evict``, each leaves memory once its checkpoint
        is committed, unless it has changed since."""
        states = tuple(st for st in states if st.pending is None)
        if not states:
            return
        for state in states:
            state.pending = state.counters
        rows = [(st.uid, st.steps, st.events, data) for st, data in zip(states, pack_many(self.engine, states))]
        self.writer.submit(Job(rows, self.store.last_batch, list(states), evict))

    def written(self, busy: frozenset[int] = frozenset()) -> None:
        """What the writer committed: the streams' marks advance (only now may the log behind them go)."""
        unloaded = False
        for job in self.writer.finished():
            if job.error is not None:
                self.telemetry.write_failed()
                log.warning("checkpoint of %d streams failed: %s", len(job.owners), job.error)
            for state in job.owners:
                held, state.pending = state.pending, None
                runs, state.pending_runs = state.pending_runs, None
                assert held is not None
                if job.error is not None:
                    continue
                state.checkpointed(job.mark, held)
                state.runs = runs or []  # (None: the checkpoint carried its results, an older version's)
                if state.runs:
                    self._released += state.results.release(state.runs[-1].last)
                unchanged = state.counters[:2] == held[:2] and state.uid not in busy
                current = self.registry.find(state.tenant, state.id) is state  # not deleted meanwhile
                if job.evict and unchanged and state.loaded and current:
                    self._unload(state)
                    unloaded = True
        if unloaded or self._released >= RELEASED_BYTES:  # their memory, and the snapshots', back to the OS
            self.engine.release_memory()
            self._released = 0

    def checkpoint_all(self) -> None:
        """Every stream changed since its checkpoint, committed when this returns (at shutdown)."""
        self.writer.flush()
        self.written()
        for group in groups([st for st in self.registry if st.loaded and st.dirty]):
            self.checkpoint(*group)
        self.writer.flush()
        self.written()

    def housekeeping(self, busy: frozenset[int] = frozenset(), unhurried: Callable[[], bool] = never) -> None:
        """Due checkpoints and evictions, in groups (``groups``), within a time budget, or past it while
        ``unhurried()`` says nothing waits and the writer keeps up (``WRITER_BACKLOG``); then, once every stream
        has been looked at, the log behind every stream's fallback checkpoint is trimmed. Streams in ``busy``
        (uids: observations of theirs are logged but not all applied yet) are left alone: a checkpoint now
        would claim the whole log batch.

        A pass looks at ``SWEEP_STREAMS`` streams at most, the next pass at the next ones: looking at every
        stream took ~1 us each, every pass (10,000 streams: 11 ms a pass, requests waiting). What falls due is
        then found at most a sweep's passes late (10,000 streams: 2.5 s under load, 12.5 s on an idle server
        whose passes come every half second, the engine thread's ``TICK_SECONDS``, against periods of a minute),
        and what a pass cut short left, by the next sweep; the trim's scan of every stream runs once a sweep."""
        self.written(busy)
        now = time.monotonic()
        budget = HOUSEKEEPING_BUDGET
        if now - self._housekept < HOUSEKEEPING_SECONDS:
            if not (self._unfinished and self._may_go_on(busy, unhurried)):
                return
            budget = 0.0  # a pass resumed because nothing waits: on only while nothing does
        self._housekept, self._unfinished = now, False
        s = self.settings
        looked, sweep_ends = self._looked_at()
        free = [st for st in looked if st.uid not in busy and st.pending is None]
        idle = [st for st in free if st.loaded and now - st.last_active >= s.idle_seconds]
        due = [
            st for st in free
            if st.loaded and st.dirty and now - st.last_active < s.idle_seconds and now - st.checkpoint_time >= s.checkpoint_seconds
        ]  # fmt: skip
        quiet = [st for st in free if not st.dirty and not st.damaged and st.checkpoint_step >= 0]
        # quiet for a period since its newest checkpoint, yet holding the log back for an older one (sooner, most
        # streams under load would be copied between two observations: a second write of every checkpoint)
        quiet = [st for st in quiet if st.needs_log and now - st.checkpoint_time >= s.checkpoint_seconds]
        for action, states in ((self._evict, idle), (self.checkpoint, due), (self._copy_newest, quiet)):
            for group in groups(states):
                if time.monotonic() - now > budget and not self._may_go_on(busy, unhurried):
                    self._unfinished = True  # the rest next time, or as soon as nothing waits
                    break
                action(*group)
        self.telemetry.in_memory(len(self.engine))
        if not sweep_ends:
            return
        needed = self._needed_from(busy)
        if needed > self._trimmed:
            try:
                self.store.trim(needed)
                self._trimmed = needed
            except StoreUnavailable as exc:
                log.warning("log trim failed: %s", exc)

    def _looked_at(self) -> tuple[list[StreamState], bool]:
        """The streams this pass looks at (the current sweep's next ``SWEEP_STREAMS``, those still registered:
        a new sweep starts from the registry as it is), and whether they end the sweep."""
        if self._swept >= len(self._sweep):
            self._sweep, self._swept = list(self.registry), 0
        looked = self._sweep[self._swept : self._swept + SWEEP_STREAMS]
        self._swept += SWEEP_STREAMS  # (what a pass cut short leaves is found by the next sweep)
        sweep_ends = self._swept >= len(self._sweep)
        if len(self._sweep) > SWEEP_STREAMS:  # (one pass sweeps them all: the registry as it is, nothing to check)
            looked = [st for st in looked if self.registry.find(st.tenant, st.id) is st]  # not deleted since
        return looked, sweep_ends

    def _may_go_on(self, busy: frozenset[int], unhurried: Callable[[], bool]) -> bool:
        """Past the budget: whether nothing waits and the writer keeps up (what it wrote is taken in first:
        evicted streams leave memory as their checkpoints are committed, not at the end of the pass)."""
        if not unhurried():
            return False
        self.written(busy)
        return self.writer.backlog < WRITER_BACKLOG

    def _copy_newest(self, *states: StreamState) -> None:
        try:
            mark, copied = self.write(lambda store: store.copy_newest([st.uid for st in states]))
        except ServiceError as exc:
            log.warning("copying the checkpoints of %d quiet streams failed: %s", len(states), exc)
            return
        done = set(copied)
        for st in states:
            if st.uid in done:
                st.fallback_mark, st.newest_mark = st.newest_mark, mark
                st.fallback_state = (st.steps, st.events)
            else:  # its newest had rotted and is gone: the older one is its newest; in memory, the stream is
                # checkpointed again soon; evicted, it is restored from the older one and the log (``restore``)
                st.newest_mark = st.fallback_mark
                st.checkpoint_step, st.checkpoint_events = st.fallback_state

    def _needed_from(self, busy: frozenset[int]) -> int:
        """The log batch after which some stream may need the log to recover (a busy one: its pending
        observations are in the log after its marks)."""
        needing = (st.fallback_mark for st in self.registry if st.needs_log or st.uid in busy)
        return min(needing, default=self.store.last_batch)

    def _replay_from(self, states: Iterable[StreamState]) -> int:
        """The log batch after which recovery reads: each stream's records after its newest checkpoint may be
        news (a quiet stream, whose two checkpoints hold the same state, may have been sent more since: its
        checkpoints cannot tell), and after its fallback where the newest might not hold its state."""
        marks = (st.fallback_mark if st.needs_log else st.newest_mark for st in states)
        return min(marks, default=self.store.last_batch)

    def _evict(self, *states: StreamState) -> None:
        """Drop from memory, after a checkpoint if changed; the next request restores them transparently."""
        for state in states:
            if not state.dirty:
                self._unload(state)
        self.checkpoint(*[st for st in states if st.dirty], evict=True)

    def _unload(self, state: StreamState) -> None:
        self.engine.remove_stream(state.key)
        state.loaded = False
        state.results = state.results.emptied()

    # -- recovery ------------------------------------------------------------------------------------------

    def recover(self) -> int:
        """Register every stored stream; those with records after their checkpoint are restored and
        replayed now, the others on their first request. The number of observations replayed."""
        by_uid: dict[int, StreamState] = {}
        for row in self.store.streams():
            config = CoreConfig.from_dict(json.loads(row.config))
            state = self.new_state(row.uid, row.tenant, row.stream, config, row.created_at)
            state.labels = json.loads(row.labels)
            state.created_mark, state.duplicates = row.mark, row.duplicates
            kept = list(self.store.checkpoints(row.uid))  # valid ones, newest first
            state.newest_mark = kept[0].mark if kept else row.mark
            state.fallback_mark = kept[1].mark if len(kept) > 1 else row.mark
            state.fallback_state = (kept[1].step, kept[1].ord) if len(kept) > 1 else (0, 0)
            newest = kept[0] if kept else None
            state.fresh = not row.fed
            if newest is not None:  # its counters, without loading its tensors
                try:
                    summary(newest.data, state)
                    state.checkpoint_step, state.checkpoint_events = newest.step, newest.ord
                except ValueError as exc:
                    log.error("checkpoint of %s unreadable: %s", state.key, exc)
            self.registry.add(state)
            by_uid[row.uid] = state
        self._trimmed = self.store.trimmed_through()  # a stream whose whole history is not here cannot start afresh
        try:  # from the oldest state any stream might have to restart from: records it holds are skipped
            return self._replay(by_uid, max(self._trimmed, self._replay_from(by_uid.values())))
        except CorruptLog as exc:
            for state in by_uid.values():
                if state.loaded or state.steps > state.checkpoint_step:
                    state.damaged = f"stream {state.id!r} cannot be restored exactly: {exc}"
            log.error("%s: the streams it concerns are unavailable until restored by hand", exc)
            return 0

    def _replay(self, by_uid: dict[int, StreamState], start: int) -> int:
        """Apply the log after batch ``start`` to the streams it is news to, in order, in bounded chunks."""
        chunk: list[tuple[StreamState, int, np.ndarray, np.ndarray | None, bool, float | None]] = []
        replayed = 0

        def flush() -> None:
            nonlocal replayed
            while chunk:
                items = [
                    (s.key, x.tolist(), None if y is None else y.tolist(), learn, ts) for s, _, x, y, learn, ts in chunk
                ]
                try:
                    results = self.engine.observe_many(items)
                except InvalidObservation as exc:  # one stream's record: that stream alone is lost
                    refused = chunk[exc.index][0]
                    self._damage(refused, f"a log record (seq {chunk[exc.index][1]}) was refused: {exc.message}")
                    chunk[:] = [entry for entry in chunk if entry[0] is not refused]
                    continue
                owners, seqs = [s for s, *_ in chunk], [seq for _, seq, *_ in chunk]
                record_results(owners, seqs, results, items, [entry[5] for entry in chunk])
                self.alerts.keep(alerts_of(owners, seqs, items, results))  # those a crash kept from the store
                replayed += len(chunk)
                chunk.clear()

        for _, batch in self.store.batches(start):
            if isinstance(batch, Event):
                state = by_uid.get(batch.uid)
                if state is not None and self._news(state, batch.step, batch.ord):
                    flush()
                    try:
                        self.apply_event(state, batch.kind, batch.payload)
                    except (CoreError, ServiceError) as exc:
                        self._damage(state, f"its logged {batch.kind} was refused: {exc}")
                        continue
                    state.events = batch.ord
                continue
            for uid, step, seq, x, y, learn, ts in batch.records():
                state = by_uid.get(uid)
                if state is not None and self._news(state, step, 0):
                    chunk.append((state, seq, x, y, learn, ts))
            if len(chunk) >= REPLAY_CHUNK:
                flush()
        flush()
        return replayed

    def _damage(self, state: StreamState, why: str) -> str:
        """The stream cannot be restored exactly: it answers 503 saying so; recovery goes on for the rest.
        What it answers."""
        state.damaged = f"stream {state.id!r} cannot be restored exactly: {why}"
        log.error(state.damaged)
        return state.damaged

    def _news(self, state: StreamState, step: int, order: int) -> bool:
        """Whether a log record is not yet in the stream's restored state (loading the stream if so)."""
        if state.damaged or (step, order) <= (state.checkpoint_step, state.checkpoint_events):
            return False
        if not state.loaded:
            try:
                self.load(state)
            except Unavailable:
                return False
            return (step, order) > (state.checkpoint_step, state.checkpoint_events)  # the one actually loaded
        return True


def groups(states: list[StreamState]) -> Iterator[list[StreamState]]:
    """``states`` in groups of at most ``CHECKPOINT_GROUP`` streams and, unless a stream is larger alone,
    ``GROUP_BYTES`` of checkpoint (model state and the results since the stream's newest run): one
    transaction each, so that one pass is never much over its budget."""
    group: list[StreamState] = []
    size = 0
    for state in states:
        nbytes = state.state_bytes - state.results.full_bytes + _unwritten_bytes(state)
        if group and (len(group) == CHECKPOINT_GROUP or size + nbytes > GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append(state)
        size += nbytes
    if group:
        yield group


def _unwritten_bytes(state: StreamState) -> int:
    """What a checkpoint of the stream writes of its results: those kept since its newest run."""
    kept = state.results.span()
    if kept is None:
        return 0
    return max(0, kept[1] + 1 - unwritten_from(state.runs, kept[0])) * state.results.dtype.itemsize
