"""The stream hub: one engine thread owns every stream's model, sequence numbers, results and the store.

The event loop never runs tensor code: routes validate, then submit work and await it. The engine thread
takes whatever work has queued up and, for observations, makes one batch of it (micro-batching: streams
that arrive together are stepped together), in arrival order within each stream:

    assign seqs and spot duplicates -> append the batch to the log and commit (group commit)
    -> step the engine -> record results -> answer every request -> push to watchers

Nothing is applied if the commit fails, so a failed write changes nothing and acknowledges nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tbptt.models import Engine
from tbptt.models import StreamConfig as CoreConfig

from .errors import LimitReached, ServiceError, StorageFull, StreamConflict, StreamNotFound, Unavailable
from .faults import Faults
from .modelfile import read_weights, write_weights
from .results import Result, ResultLog
from .schemas import LossMetrics, PrequentialMetrics, StreamInfo, StreamMetrics
from .settings import Settings
from .store import CorruptLog, Event, Observations, Store, StoreUnavailable
from .streams import StreamState, now_iso, pack, summary, unpack
from .telemetry import Telemetry

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (tenant, stream id)
HOUSEKEEPING_SECONDS = 0.5  # how often: syncs, due checkpoints, evictions, log trims
HOUSEKEEPING_BUDGET = 0.1  # seconds of checkpointing and evicting per pass: requests wait meanwhile
CHECKPOINT_GROUP = 64  # streams checkpointed per transaction
REPLAY_CHUNK = 20_000  # observations per engine call while recovering


@dataclass
class Incoming:
    """One observation as a route validated it."""

    x: list[float]
    y: list[float] | None
    seq: int | None


@dataclass
class _Job:
    """One request: observations for one or more streams (``parts``, applied all or none), or a call."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    parts: list[tuple[Key, list[Incoming]]] = field(default_factory=list)
    call: Callable[[], Any] | None = None

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        self.loop.call_soon_threadsafe(self.settle, value, error)

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """On the event loop."""
        if self.future.done():  # the client went away
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(value)


def _settle_all(answers: list[tuple[_Job, Any]]) -> None:
    for job, value in answers:
        job.settle(value)


class Hub:
    def __init__(self, settings: Settings, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.telemetry = telemetry or Telemetry(None)
        self.engine = Engine()
        self.store: Store | None = None
        self.ready = False
        self.failure: BaseException | None = None
        self._streams: dict[Key, StreamState] = {}
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._watchers: dict[Key, set[asyncio.Queue]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._trimmed = 0  # log batches up to here are gone
        self._per_tenant: dict[str, int] = {}
        self._housekept = 0.0

    # -- lifecycle (event loop side) -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def stop(self) -> None:
        """Finish queued work, checkpoint every stream, close the store (bounded by the shutdown timeout)."""
        if not self._thread.is_alive():
            return
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, self.settings.shutdown_timeout)
        if self._thread.is_alive():
            log.error("engine did not stop within %.0f s", self.settings.shutdown_timeout)

    # -- the API for routes (event loop side) --------------------------------------------------------------

    def config(self, tenant: str, stream: str) -> CoreConfig:
        """The stream's config, read without waiting for the engine (dict reads are atomic)."""
        state = self._streams.get((tenant, stream))
        if state is None:
            raise StreamNotFound(stream)
        return state.config

    async def observe(self, tenant: str, parts: list[tuple[str, list[Incoming]]]) -> list[list[Result]]:
        """Apply observations to one or more streams, all or none; the results per part, in order."""
        job = _Job(asyncio.get_running_loop(), self._future(), [((tenant, stream), obs) for stream, obs in parts])
        return await self._submit(job)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the engine thread, between batches."""
        return await self._submit(_Job(asyncio.get_running_loop(), self._future(), call=lambda: fn(*args)))

    def watch(self, tenant: str, stream: str, size: int) -> asyncio.Queue:
        """A bounded queue that receives every batch applied to the stream, then None if it falls behind."""
        watcher: asyncio.Queue = asyncio.Queue(maxsize=size)
        self._watchers.setdefault((tenant, stream), set()).add(watcher)
        return watcher

    def unwatch(self, tenant: str, stream: str, watcher: asyncio.Queue) -> None:
        watchers = self._watchers.get((tenant, stream))
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[(tenant, stream)]

    def _future(self) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, job: _Job) -> Any:
        if self.failure is not None or self._stopped.is_set():
            raise Unavailable("the engine is not running")
        if not self.ready:
            raise Unavailable("the service is recovering; try again shortly")
        self._jobs.put(job)
        return await job.future

    def _publish(self, key: Key, payload: dict) -> None:
        """On the event loop: hand a batch to the stream's watchers; a full (slow) watcher is dropped."""
        for watcher in list(self._watchers.get(key, ())):
            try:
                watcher.put_nowait(payload)
            except asyncio.QueueFull:  # too slow: dropped, it never slows the stream
                self.unwatch(*key, watcher)
                watcher.get_nowait()  # make room for the goodbye
                watcher.put_nowait(None)

    # -- the engine thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            torch.set_num_threads(self.settings.torch_threads)
            started = time.monotonic()
            faults = Faults.from_environment()
            faults.install_in_engine()
            self.store = Store(self.settings.data_dir, self.settings.fsync, self.settings.fsync_interval, faults)
            self.store.start_syncing()
            replayed = self._recover()
            log.info(
                "recovered %d streams (%d observations replayed) in %.2f s",
                len(self._streams), replayed, time.monotonic() - started,
            )  # fmt: skip
            self.ready = True
            self._serve()
        except BaseException as exc:
            self.failure = exc
            log.exception("engine thread failed")
        finally:
            self._shutdown()

    def _serve(self) -> None:
        wait = self.settings.batch_wait_ms / 1000
        while True:
            try:
                job = self._jobs.get(timeout=HOUSEKEEPING_SECONDS)
            except queue.Empty:
                self._housekeeping()
                continue
            jobs = [job]
            if wait and job is not None and job.call is None:
                time.sleep(wait)  # let concurrent observations join this batch
            while True:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._process([j for j in jobs if j is not None])
            self._housekeeping()
            if None in jobs:
                return

    def _process(self, jobs: list[_Job]) -> None:
        """Calls run in order; consecutive observation jobs between them make one engine batch."""
        batch: list[_Job] = []
        for job in jobs:
            if job.call is None:
                batch.append(job)
                continue
            if batch:
                self._observe_safely(batch)
                batch = []
            try:
                job.resolve(job.call())
            except Exception as exc:
                job.resolve(error=exc if isinstance(exc, ServiceError) else _internal(exc))
        if batch:
            self._observe_safely(batch)

    def _observe_safely(self, jobs: list[_Job]) -> None:
        """A bug must not leave requests hanging. After the commit the engine may hold half a batch:
        then the service stops taking work (503) and a restart recovers exactly from the log."""
        try:
            self._observe(jobs)
        except Exception as exc:
            self.failure = exc
            log.exception("an engine batch failed; refusing work until restarted")
            for job in jobs:
                job.resolve(error=Unavailable("internal error: the service must be restarted"))

    def _observe(self, jobs: list[_Job]) -> None:
        plans: list[tuple[_Job, list[tuple[StreamState, list[tuple[bool, int]]]]]] = []
        items: list[tuple[str, list[float], list[float] | None]] = []
        owners: list[StreamState] = []
        seqs: list[int] = []
        steps: list[int] = []
        last_seq: dict[Key, int | None] = {}
        last_step: dict[Key, int] = {}
        for job in jobs:
            try:  # every stream of the request first: all or nothing
                states = [self._loaded(*key) for key, _ in job.parts]
            except Exception as exc:  # nothing written yet: only this request fails
                job.resolve(error=exc if isinstance(exc, ServiceError) else _internal(exc))
                continue
            part_plans = []
            for state, (key, observations) in zip(states, job.parts):
                entries = []
                for obs in observations:
                    last = last_seq.get(key, state.last_seq)
                    seq = obs.seq if obs.seq is not None else (1 if last is None else last + 1)
                    if last is not None and seq <= last:
                        entries.append((True, seq))  # a duplicate: answered from the results
                        continue
                    last_seq[key] = seq
                    last_step[key] = last_step.get(key, state.steps) + 1
                    entries.append((False, len(items)))
                    items.append((state.key, obs.x, obs.y))
                    owners.append(state)
                    seqs.append(seq)
                    steps.append(last_step[key])
                part_plans.append((state, entries))
            plans.append((job, part_plans))

        if items and self.settings.log:
            record = Observations.of(
                [s.uid for s in owners], steps, seqs, [x for _, x, _ in items], [y for _, _, y in items]
            )
            try:
                assert self.store is not None
                self.store.append(record)
            except StoreUnavailable as exc:
                self.telemetry.write_failed()
                for job, _ in plans:
                    job.resolve(error=StorageFull(str(exc)))
                return
        updating, skipped, started = self.engine.update_seconds, self.engine.skipped_updates, time.perf_counter()
        results = self.engine.observe_many(items) if items else []
        self._record(owners, seqs, results)
        self.telemetry.observed(
            len(results), sum(r.updated for r in results), time.perf_counter() - started,
            self.engine.update_seconds - updating,
        )  # fmt: skip
        self.telemetry.skipped_updates(self.engine.skipped_updates - skipped)

        touched: dict[Key, list[Result]] = {}
        observed: dict[Key, list[dict]] = {}  # what watchers are also told: the values behind the results
        settled: list[tuple[_Job, Any]] = []
        for job, part_plans in plans:
            answers = []
            for state, entries in part_plans:
                part = []
                for duplicate, ref in entries:
                    if duplicate:
                        state.duplicates += 1
                        part.append(self._duplicate(state, ref))
                        continue
                    r = results[ref]
                    result = {"seq": seqs[ref], "step": r.step, "prediction": r.prediction, "loss": r.loss,
                              "updated": r.updated, "duplicate": False}  # fmt: skip
                    part.append(result)
                    touched.setdefault((state.tenant, state.id), []).append(result)
                    if (state.tenant, state.id) in self._watchers:
                        _, x, y = items[ref]
                        observed.setdefault((state.tenant, state.id), []).append({"seq": seqs[ref], "x": x, "y": y})
                answers.append(part)
            settled.append((job, answers))
        if settled:  # one wake-up of the event loop for the whole batch
            settled[0][0].loop.call_soon_threadsafe(_settle_all, settled)
        for key, applied in touched.items():
            if key in self._watchers and self._loop is not None:
                payload = {"stream": key[1], "results": applied, "observations": observed.get(key, [])}
                self._loop.call_soon_threadsafe(self._publish, key, payload)
            state = self._streams[key]
            if state.updates - state.checkpoint_updates >= self.settings.checkpoint_updates:
                self._checkpoint(state)  # (time-based checkpoints: housekeeping)

    def _record(self, owners: list[StreamState], seqs: list[int], results: list) -> None:
        """Per stream: new last seq, step and update counts, and the results kept for duplicates."""
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
                state.results.append(seqs[ks[0]], last.step, last.prediction, last.loss, last.updated)
                continue
            rs = [results[k] for k in ks]
            state.updates += sum(r.updated for r in rs)
            state.results.extend(
                np.array([seqs[k] for k in ks], dtype=np.int64),
                np.array([r.step for r in rs], dtype=np.int64),
                np.array([r.prediction for r in rs], dtype=np.float64),
                np.array([np.nan if r.loss is None else r.loss for r in rs], dtype=np.float64),
                np.array([r.updated for r in rs], dtype=bool),
            )

    def _duplicate(self, state: StreamState, seq: int) -> Result:
        found = state.results.find(seq)
        if found is not None:
            return found
        return {"seq": seq, "step": state.steps, "prediction": [], "loss": None, "updated": False, "duplicate": True}

    # -- stream operations (engine thread, through ``call``) -----------------------------------------------

    def create(self, tenant: str, stream: str, config: CoreConfig) -> tuple[StreamInfo, bool]:
        state = self._streams.get((tenant, stream))
        if state is not None:
            if state.config != config:
                raise StreamConflict(stream)
            return state.info(), False
        self._check_room(tenant)
        created_at = now_iso()
        uid = self._write(lambda s: s.add_stream(tenant, stream, json.dumps(config.to_dict()), created_at))
        state = self._new_state(uid, tenant, stream, config, created_at)
        assert self.store is not None
        state.created_mark = state.newest_mark = state.fallback_mark = self.store.last_batch
        self.engine.add_stream(state.key, config)
        state.loaded = True
        self._add(state)
        return state.info(), True

    def _check_room(self, tenant: str) -> None:
        s = self.settings
        if len(self._streams) >= s.max_streams:
            raise LimitReached(f"the service holds its limit of {s.max_streams} streams (TBPTT_MAX_STREAMS)")
        if self._per_tenant.get(tenant, 0) >= s.max_streams_per_tenant:
            raise LimitReached(
                f"this tenant holds its limit of {s.max_streams_per_tenant} streams (TBPTT_MAX_STREAMS_PER_TENANT)"
            )

    def info(self, tenant: str, stream: str) -> StreamInfo:
        return self._get(tenant, stream).info()

    def list(self, tenant: str) -> list[StreamInfo]:
        return [s.info() for (t, _), s in sorted(self._streams.items()) if t == tenant]

    def delete(self, tenant: str, stream: str) -> None:
        state = self._get(tenant, stream)
        self._write(lambda s: s.delete_stream(state.uid))
        if state.loaded:
            self.engine.remove_stream(state.key)
        del self._streams[(tenant, stream)]
        self._per_tenant[tenant] -= 1
        self.telemetry.streams(len(self._streams))

    def reset(self, tenant: str, stream: str, hidden: bool, weights: bool) -> StreamInfo:
        state = self._loaded(tenant, stream)
        if hidden or weights:
            flags = bytes([hidden, weights])
            self._log_event(state, "reset", flags)
            self._apply_reset(state, flags)
        return state.info()

    def predictions(self, tenant: str, stream: str, limit: int) -> list[Result]:
        return self._loaded(tenant, stream).results.last(limit)

    def metrics(self, tenant: str, stream: str) -> StreamMetrics:
        state = self._loaded(tenant, stream)
        m = self.engine.metrics(state.key)
        return StreamMetrics(
            steps=m.steps, updates=m.updates, skipped_updates=m.skipped_updates, last_seq=state.last_seq,
            duplicates=state.duplicates, loss=LossMetrics(last_update=m.last_update_loss, ewma=m.loss_ewma),
            prequential=PrequentialMetrics(n=m.prequential_n, mae=m.mae, rmse=m.rmse), grad_norm=m.grad_norm,
        )  # fmt: skip

    def export_model(self, tenant: str, stream: str) -> bytes:
        state = self._loaded(tenant, stream)
        return write_weights(self.engine.export_weights(state.key), state.config)

    def import_model(self, tenant: str, stream: str, data: bytes) -> StreamInfo:
        state = self._loaded(tenant, stream)
        weights = read_weights(data, state.config)  # names, shapes, dtype and finiteness: nothing changes if bad
        self._log_event(state, "import", data)
        self.engine.import_weights(state.key, weights)
        return state.info()

    def _apply_reset(self, state: StreamState, flags: bytes) -> None:
        if flags[0]:
            self.engine.reset_hidden(state.key)
        if flags[1]:
            self.engine.reset_weights(state.key)

    def _log_event(self, state: StreamState, kind: str, payload: bytes) -> None:
        """Log a reset or import so that recovery replays it between the same observations."""
        event = Event(state.uid, state.steps, state.events + 1, kind, payload)
        self._write(lambda s: s.append(event))
        state.events += 1

    # -- restoring, checkpoints, eviction ------------------------------------------------------------------

    def _new_state(self, uid: int, tenant: str, stream: str, config: CoreConfig, created_at: str) -> StreamState:
        assert config.output_size is not None
        results = ResultLog(self.settings.results_retained, config.output_size)
        return StreamState(uid, tenant, stream, config, created_at, results)

    def _add(self, state: StreamState) -> None:
        self._streams[(state.tenant, state.id)] = state
        self._per_tenant[state.tenant] = self._per_tenant.get(state.tenant, 0) + 1
        self.telemetry.streams(len(self._streams))

    def _get(self, tenant: str, stream: str) -> StreamState:
        state = self._streams.get((tenant, stream))
        if state is None:
            raise StreamNotFound(stream)
        return state

    def _loaded(self, tenant: str, stream: str) -> StreamState:
        state = self._get(tenant, stream)
        if state.damaged:
            raise Unavailable(state.damaged)
        if not state.loaded:
            self._load(state)
        return state

    def _load(self, state: StreamState) -> None:
        """Into the engine from the newest valid checkpoint (or fresh); nothing is replayed here."""
        assert self.store is not None
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
            break
        else:
            if state.created_mark < self._trimmed:  # its early log is gone: a fresh start would be a silent reset
                state.damaged = f"stream {state.id!r} cannot be restored: its checkpoints are unreadable"
                log.error(state.damaged)
                raise Unavailable(state.damaged)
            self.engine.add_stream(state.key, state.config)
            state.checkpoint_step, state.checkpoint_events, state.checkpoint_updates = 0, 0, 0
        state.loaded = True

    def _recover(self) -> int:
        """Every stored stream; those with records after their checkpoint are restored and replayed now,
        the others on their first request."""
        assert self.store is not None
        by_uid: dict[int, StreamState] = {}
        for row in self.store.streams():
            config = CoreConfig.from_dict(json.loads(row.config))
            state = self._new_state(row.uid, row.tenant, row.stream, config, row.created_at)
            state.created_mark = row.mark
            marks = [c.mark for c in self.store.checkpoints(row.uid)]  # newest first
            state.newest_mark = marks[0] if marks else row.mark
            state.fallback_mark = marks[1] if len(marks) > 1 else row.mark
            newest = next(self.store.checkpoints(row.uid), None)
            if newest is not None:  # its counters, without loading its tensors
                try:
                    summary(newest.data, state)
                    state.checkpoint_step, state.checkpoint_events = newest.step, newest.ord
                except ValueError as exc:
                    log.error("checkpoint of %s unreadable: %s", state.key, exc)
            self._add(state)
            by_uid[row.uid] = state
        self._trimmed = min((s.fallback_mark for s in by_uid.values()), default=self.store.last_batch)
        try:  # from the oldest state any stream might have to restart from: records it holds are skipped
            return self._replay(by_uid, self._trimmed)
        except CorruptLog as exc:
            for state in by_uid.values():
                if state.loaded or state.steps > state.checkpoint_step:
                    state.damaged = f"stream {state.id!r} cannot be restored exactly: {exc}"
            log.error("%s: the streams it concerns are unavailable until restored by hand", exc)
            return 0

    def _replay(self, by_uid: dict[int, StreamState], start: int) -> int:
        """Apply the log after batch ``start`` to the streams it is news to, in order, in bounded chunks."""
        assert self.store is not None
        chunk: list[tuple[StreamState, int, np.ndarray, np.ndarray | None]] = []
        replayed = 0

        def flush() -> None:
            nonlocal replayed
            if chunk:
                items = [(s.key, x.tolist(), None if y is None else y.tolist()) for s, _, x, y in chunk]
                self._record([s for s, *_ in chunk], [seq for _, seq, _, _ in chunk], self.engine.observe_many(items))
                replayed += len(chunk)
                chunk.clear()

        for _, batch in self.store.batches(start):
            if isinstance(batch, Event):
                state = by_uid.get(batch.uid)
                if state is not None and self._news(state, batch.step, batch.ord):
                    flush()
                    self._apply_event(state, batch)
                continue
            for uid, step, seq, x, y in batch.records():
                state = by_uid.get(uid)
                if state is not None and self._news(state, step, 0):
                    chunk.append((state, seq, x, y))
            if len(chunk) >= REPLAY_CHUNK:
                flush()
        flush()
        return replayed

    def _news(self, state: StreamState, step: int, order: int) -> bool:
        """Whether a log record is not yet in the stream's restored state (loading the stream if so)."""
        if state.damaged or (step, order) <= (state.checkpoint_step, state.checkpoint_events):
            return False
        if not state.loaded:
            try:
                self._load(state)
            except Unavailable:
                return False
            return (step, order) > (state.checkpoint_step, state.checkpoint_events)  # the one actually loaded
        return True

    def _apply_event(self, state: StreamState, event: Event) -> None:
        if event.kind == "reset":
            self._apply_reset(state, event.payload)
        else:
            self.engine.import_weights(state.key, read_weights(event.payload, state.config))
        state.events = event.ord

    def _checkpoint(self, *states: StreamState) -> bool:
        """Checkpoint these streams in one transaction; False if the store refused (the log still holds
        everything: the next attempt will do)."""
        if not states:
            return True
        packed = [(s.uid, s.steps, s.events, pack(self.engine, s)) for s in states]
        try:
            mark = self._write(lambda store: store.checkpoint(packed))
        except ServiceError as exc:
            log.warning("checkpoint of %d streams failed: %s", len(states), exc)
            return False
        for state in states:
            state.checkpointed(mark)
        return True

    def _housekeeping(self) -> None:
        """Due checkpoints and evictions, a few dozen streams per transaction, within a time budget; then
        the log behind every stream's fallback checkpoint is trimmed."""
        now = time.monotonic()
        if now - self._housekept < HOUSEKEEPING_SECONDS:
            return
        self._housekept = now
        s = self.settings
        idle = [st for st in self._streams.values() if st.loaded and now - st.last_active >= s.idle_seconds]
        due = [
            st for st in self._streams.values()
            if st.loaded and st.dirty and now - st.last_active < s.idle_seconds and now - st.checkpoint_time >= s.checkpoint_seconds
        ]  # fmt: skip
        for start in range(0, len(idle), CHECKPOINT_GROUP):
            if time.monotonic() - now > HOUSEKEEPING_BUDGET:
                break  # the rest next time
            self._evict(idle[start : start + CHECKPOINT_GROUP])
        for start in range(0, len(due), CHECKPOINT_GROUP):
            if time.monotonic() - now > HOUSEKEEPING_BUDGET:
                break
            self._checkpoint(*due[start : start + CHECKPOINT_GROUP])
        self.telemetry.in_memory(len(self.engine))
        assert self.store is not None
        needed = min((st.fallback_mark for st in self._streams.values()), default=self.store.last_batch)
        if needed > self._trimmed:
            try:
                self.store.trim(needed)
                self._trimmed = needed
            except StoreUnavailable as exc:
                log.warning("log trim failed: %s", exc)

    def _evict(self, states: list[StreamState]) -> None:
        """Checkpoint and drop from memory; the next request restores them transparently."""
        if not self._checkpoint(*[st for st in states if st.dirty]):
            return  # keep them in memory
        for state in states:
            self.engine.remove_stream(state.key)
            state.loaded = False
            state.results = ResultLog(state.results.capacity, state.results.output_size)

    def _shutdown(self) -> None:
        self._stopped.set()
        while True:  # refuse what is still queued
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.resolve(error=Unavailable("the service is shutting down"))
        if self.store is None:
            return
        if self.failure is None:
            dirty = [st for st in self._streams.values() if st.loaded and st.dirty]
            for start in range(0, len(dirty), CHECKPOINT_GROUP):
                self._checkpoint(*dirty[start : start + CHECKPOINT_GROUP])
        self.store.close()

    def _write(self, action: Callable[[Store], Any]) -> Any:
        assert self.store is not None
        try:
            return action(self.store)
        except StoreUnavailable as exc:
            self.telemetry.write_failed()
            raise StorageFull(str(exc)) from exc


def _internal(exc: Exception) -> ServiceError:
    log.exception("engine call failed", exc_info=exc)
    return ServiceError("internal error")
