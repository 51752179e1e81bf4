"""A shard: the streams it owns and everything about them, on the engine thread (their only writer).

It composes the engine, the store, the stream registry and durability, and is the worker the engine thread
runs (``engine_thread.Worker``): plain synchronous calls, no event loop, no futures, so that it can run in
another process as it is (the shards issue). A micro-batch of observation requests goes:

    plan (check each part against its stream, assign seqs, spot duplicates: ``ingest``)
    -> append the batch to the log and commit (group commit)
    -> in slices (``applying``): step the engine -> record results -> hand what was applied to watchers
       -> answer each request once all of it is applied -> checkpoints that are due

Nothing is applied if the commit fails, so a failed write changes nothing and acknowledges nothing.
Everything here runs on the engine thread; the hub calls it through ``EngineThread``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tbptt.models import Engine, StreamMetrics
from tbptt.models import StreamConfig as CoreConfig

from . import limits
from .alerts import Alert, AlertFeed, ShardAlertIds, alerts_of
from .applying import Applying, Pace
from .checkpoint import pack, unpack
from .checkpoint_writer import CheckpointWriter
from .datadir import DataDirLock
from .durability import Durability, never, stream_bytes
from .errors import Invalid, StorageFull, StreamConflict, Unavailable
from .faults import Faults
from .ingest import Part, Plan, admits, check, fits, learns, provisional
from .keygroups import check_unsharded
from .modelfile import read_weights, write_weights
from .patching import Template, patched
from .registry import StreamRegistry, Usage
from .results import Observed, Result
from .schemas import differences
from .settings import Settings
from .store import Observations, Store
from .streams import Key, StreamInfo, StreamState, now_iso, record_results
from .telemetry import Telemetry

log = logging.getLogger(__name__)

MAX_REPLY_VALUES = 1 << 18  # values in one /predictions reply: encoding it holds up the event loop
DEFAULT_PREDICTIONS = 100

Applied = Callable[[dict[Key, dict[str, Any]]], None]  # told, on the engine thread, what watched streams got
Alerted = Callable[[dict[str, list[Alert]]], None]  # ... and the new alerts, per tenant
Request = tuple[str, list[Part]]  # (tenant, parts)
Outcome = list[list[Result]] | Exception | None  # results per part, or what refused the request
Checked = list[StreamState] | None  # the streams ``check`` admitted a request to, if still to be trusted


@dataclass(frozen=True)
class Handover:
    """A stream as one shard hands it to another (service/rebalance.py): what its row holds, its exact state
    (a checkpoint's bytes, with its counters) and its alerts (id, step, JSON body)."""

    tenant: str
    stream: str
    origin: CoreConfig
    labels: dict[str, str]
    created_at: str
    counters: tuple[int, int]  # (steps, events)
    state: bytes
    alerts: list[tuple[int, int, str]]


class Shard:
    def __init__(self, settings: Settings, telemetry: Telemetry, index: int | None = None) -> None:
        self.settings, self.telemetry = settings, telemetry
        self.index = index  # a sharded server's shard's (None: the single process)
        self.engine = Engine()
        self.registry = StreamRegistry(settings)
        self.store: Store | None = None
        self._lock: DataDirLock | None = None
        self._durability: Durability | None = None
        self._writer: CheckpointWriter | None = None
        self.watched: frozenset[Key] = frozenset()  # replaced whole by the event loop, never changed in place
        self.on_applied: Applied = lambda batches: None
        self.on_alerts: Alerted = lambda alerts: None
        self._alerts: AlertFeed | None = None
        self._applying: list[Applying] = []  # micro-batches not yet wholly applied
        self.templates: dict[str, Template] = {}  # per tenant: what an unknown stream's observation creates
        self.elsewhere: Usage | None = None  # sharded: what the other shards hold, counted in the quotas
        self._pace = Pace()

    @property
    def alerts(self) -> AlertFeed:
        assert self._alerts is not None, "the shard is not open"
        return self._alerts

    @property
    def durability(self) -> Durability:
        assert self._durability is not None, "the shard is not open"
        return self._durability

    # -- the worker: open, apply, tick, close --------------------------------------------------------------

    def open(self) -> None:
        started = time.monotonic()
        faults = Faults.from_environment()
        faults.install_in_engine()
        s = self.settings
        check_unsharded(s.data_dir)  # a sharded directory's streams are in its shards' folders
        self._lock = DataDirLock(s.data_dir)
        self._lock.acquire()  # one server per data directory: refused (the engine fails) if another holds it
        self.store = Store(s.data_dir, s.fsync, s.fsync_interval, faults)
        self.store.start_syncing()
        self._writer = CheckpointWriter(self.store.path, faults)
        ids = None if self.index is None else ShardAlertIds.open(self.store, self.index)
        self._alerts = AlertFeed(self.store, s.alerts_retained, self.telemetry, ids)
        self._durability = Durability(
            s, self.engine, self.store, self._writer, self.registry, self.telemetry, self._alerts
        )
        self.templates = {tenant: Template.of(body) for tenant, body in self.store.templates().items()}
        replayed = self.durability.recover()
        self.telemetry.streams(len(self.registry))
        log.info(
            "recovered %d streams (%d observations replayed) in %.2f s",
            len(self.registry), replayed, time.monotonic() - started,
        )  # fmt: skip

    def begin(self, requests: list[Request], checked: list[Checked] | None = None) -> Applying:
        """Check, plan and log a micro-batch of requests (each: a tenant and its parts, all or nothing); the
        rest is applied in slices by the returned ``Applying``, whose ``run`` answers each request (its
        results per part, or the exception that refused it). ``checked``: per request, what ``check``
        admitted if nothing that could change its verdict happened since (None: check it now)."""
        refused: dict[int, Any] = {}
        plan = Plan()
        for k, (tenant, parts) in enumerate(requests):
            try:  # every part of the request first: all or nothing
                states = checked[k] if checked is not None else None
                if states is None or not self._still_admitted(tenant, parts, states):
                    states = self._admitted(tenant, parts)
                plan.add(k, states, parts)
            except Exception as exc:  # nothing written yet: only this request fails
                refused[k] = exc
        if (plan.items or plan.duplicates) and self.settings.log:
            try:
                self._append(plan)
            except StorageFull as exc:  # nothing applied, nothing acknowledged
                refused.update((request.handle, exc) for request in plan.requests)
                plan = Plan()
        applying = Applying(plan, refused, self._step, self._pace)
        self._applying = [a for a in self._applying if not a.done] + [applying]
        return applying

    def apply(self, requests: list[Request], checked: list[Checked] | None = None) -> list[Outcome]:
        """``begin`` and every slice at once: per request, its results per part or what refused it."""
        applying = self.begin(requests, checked)
        outcomes: list[Outcome] = [None] * len(requests)
        while True:
            for k, outcome in applying.run(math.inf):
                outcomes[k] = outcome
            if applying.done:
                return outcomes

    @property
    def busy(self) -> frozenset[int]:
        """Streams (uids) with observations logged and not yet applied."""
        return frozenset().union(*(a.busy for a in self._applying))

    def _step(self, plan: Plan, items: list[int], finished: list[StreamState]) -> None:
        """Apply ``items`` of the plan; record, count, tell watchers; checkpoints that became due for the
        streams that have had all their observations."""
        owners, seqs = [plan.owners[k] for k in items], [plan.seqs[k] for k in items]
        updating, skipped, started = self.engine.update_seconds, self.engine.skipped_updates, time.perf_counter()
        judged = self.engine.judged
        batch = [plan.items[k] for k in items]
        results = self.engine.observe_many(batch)
        record_results(owners, seqs, results, batch, [plan.stamps[k] for k in items])
        plan.record(items, results)
        self.telemetry.observed(
            len(results), results.updates, time.perf_counter() - started,
            self.engine.update_seconds - updating,
        )  # fmt: skip
        self.telemetry.skipped_updates(self.engine.skipped_updates - skipped)
        self.telemetry.judged(*(now - before for now, before in zip(self.engine.judged, judged)))
        alerts = alerts_of(owners, seqs, batch, results)
        if alerts:
            self.telemetry.anomalies(len(alerts), sum(alert.body["opens"] for alert in alerts))
            stored = self.alerts.keep(alerts)
            if stored:
                self.on_alerts(stored)
        watched = self.watched
        if watched:
            applied = plan.applied(items, watched)
            if applied:
                self.on_applied(applied)
        for state in finished:
            if state.updates - state.checkpoint_updates >= self.settings.checkpoint_updates:
                self.durability.checkpoint(state)  # (time-based checkpoints: housekeeping)

    def _append(self, plan: Plan) -> None:
        """The batch into the log, committed (group commit), with the counts of the retries it answers (so
        that they survive a crash); ``StorageFull`` if the store refused."""
        counts = plan.duplicates
        if not plan.items:
            self.durability.write(lambda store: store.count_duplicates(counts))
            return
        record = Observations.of(
            [s.uid for s in plan.owners], plan.steps, plan.seqs, [item[1] for item in plan.items],
            [item[2] for item in plan.items], [learns(item) for item in plan.items], plan.stamps,
        )  # fmt: skip
        self.durability.append(plan.owners, record, counts)

    def tick(self, idle: Callable[[], bool] = never) -> None:
        """Housekeeping (``idle()``: whether nothing waits for this shard now)."""
        self._applying = [a for a in self._applying if not a.done]
        self.durability.housekeeping(self.busy, idle)
        self.alerts.housekeeping()

    def close(self, failed: bool) -> None:
        try:
            if self.store is not None:
                try:
                    if not failed:
                        self.alerts.housekeeping()  # alerts a refused write left waiting: one more try
                        self.durability.checkpoint_all()
                finally:
                    if self._writer is not None:
                        self._writer.close()
                    self.store.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    # -- streams -------------------------------------------------------------------------------------------

    def loaded(self, tenant: str, stream: str) -> StreamState:
        """The stream, in the engine (restored from its checkpoint if it was evicted)."""
        state = self.registry.get(tenant, stream)
        if state.damaged:
            raise Unavailable(state.damaged)
        if not state.loaded:
            self.durability.restore(state)
        return state

    def _receiving(self, tenant: str, parts: list[Part]) -> list[StreamState]:
        """The streams ``parts`` are for, loaded, each part checked against its stream. Unknown streams are
        created from the tenant's template, if it has one, once every part has passed its checks (a refused
        request creates nothing)."""
        # (a sharded server's shard creates none itself: its front does, counting every shard in the quotas)
        template = self.templates.get(tenant) if self.index is None else None
        states: list[StreamState | None] = []  # None: created from the template below
        for part in parts:
            if template is not None and part.incarnation is None and self.registry.find(tenant, part.stream) is None:
                fits(template.config, part)
                states.append(None)
                continue
            state = self.loaded(tenant, part.stream)  # (loading evicts nothing: eviction is housekeeping's)
            check(state, part)
            states.append(state)
        if template is not None:  # (all at once, if the request would be planned: within the quotas together)
            unknown = {
                part.stream: provisional(tenant, part.stream, template.config, self.settings.results_retained)
                for part, found in zip(parts, states)
                if found is None
            }
            if unknown:
                whole = [unknown[p.stream] if found is None else found for p, found in zip(parts, states)]
                limits.check_rollout(whole, parts, self.settings)
                admits(whole, parts)
                self.create_many(tenant, [(stream, template.config, template.labels) for stream in unknown])
        return [self.loaded(tenant, p.stream) if s is None else s for p, s in zip(parts, states)]

    def template(self, tenant: str) -> Template | None:
        return self.templates.get(tenant)

    def missing(self, tenant: str, streams: list[str]) -> list[str]:
        """Those of ``streams`` this shard does not hold."""
        return [stream for stream in streams if self.registry.find(tenant, stream) is None]

    def set_template(self, tenant: str, template: Template | None) -> None:
        """The tenant's template (None: none): durable before it answers."""
        self.durability.write(lambda s: s.set_template(tenant, None if template is None else template.body))
        if template is None:
            self.templates.pop(tenant, None)
        else:
            self.templates[tenant] = template

    def check(self, tenant: str, parts: list[Part]) -> list[StreamState]:
        """What ``begin`` checks of a request, applying nothing: a request whose streams live on several
        shards is checked on each before any applies it. The streams it admitted, for ``begin``: they stay
        admitted until a stream's config or incarnation changes, which only a call other than an apply or
        a read does (service/shard_host.py keeps them until then), or it is evicted or damaged. Planned too (seqs
        and timestamps in order, retries that repeat: ``admits``), so that a part its shard's plan would refuse
        refuses the request before another shard applies its own parts."""
        states = self._admitted(tenant, parts)
        admits(states, parts)
        return states

    def _still_admitted(self, tenant: str, parts: list[Part], states: list[StreamState]) -> bool:
        """``check``'s streams are still those of the request, in the engine and whole (what the
        observations were checked against, their config and incarnation, the caller vouches for)."""
        registry = self.registry
        for part, state in zip(parts, states):
            if not state.loaded or state.damaged or registry.find(tenant, part.stream) is not state:
                return False
        return True

    def _admitted(self, tenant: str, parts: list[Part]) -> list[StreamState]:
        """The streams of a request that passed every check (``begin``'s and ``check``'s), one per part."""
        states = self._receiving(tenant, parts)
        limits.check_rollout(states, parts, self.settings)
        return states

    def create_many(
        self, tenant: str, streams: list[tuple[str, CoreConfig, dict[str, str]]]
    ) -> list[tuple[StreamInfo, bool]]:
        """Create many streams: each one's info, and whether it was created (False: it exists with the same config
        and labels). All or nothing: conflicts and quotas checked first, the new streams written in one
        transaction."""
        self.check_create_many(tenant, streams)
        new = {
            stream: (config, labels) for stream, config, labels in streams if self.registry.find(tenant, stream) is None
        }
        created_at = now_iso()
        rows = [
            (tenant, stream, json.dumps(config.to_dict()), created_at, json.dumps(labels))
            for stream, (config, labels) in new.items()
        ]
        uids = self.durability.write(lambda s: s.add_streams(rows)) if rows else []
        for (stream, (config, labels)), uid in zip(new.items(), uids):
            self._register(uid, tenant, stream, config, labels, created_at)
        answers = []
        for stream, _, _ in streams:
            answers.append((self.registry.get(tenant, stream).info(), stream in new))
            new.pop(stream, None)  # (a stream named again is answered as existing)
        return answers

    def check_create_many(self, tenant: str, streams: list[tuple[str, CoreConfig, dict[str, str]]]) -> None:
        """``create_many``'s checks, creating nothing: conflicts (with a stream, or with the same one named
        before), then the quotas for the new streams."""
        room, new = 0, 0  # the new streams' memory, and how many
        seen: dict[str, tuple[CoreConfig, dict[str, str]]] = {}  # each new stream's first naming
        for stream, config, labels in streams:
            state = self.registry.find(tenant, stream)
            before = (state.config, state.labels) if state is not None else seen.get(stream)
            if before is not None and before != (config, labels):
                if before[0] != config:
                    raise StreamConflict(stream, "config", differences(before[0], config))
                raise StreamConflict(stream, "labels")
            if state is None and stream not in seen:
                room, new = room + stream_bytes(config, self.settings), new + 1
            seen[stream] = (config, labels)
        if new:  # (naming only streams that exist, with their config, is never over a quota)
            self.registry.check_room(tenant, room, new, self.elsewhere)

    def create(
        self, tenant: str, stream: str, config: CoreConfig, labels: dict[str, str] | None = None
    ) -> tuple[StreamInfo, bool]:
        """The stream's info, and whether it was created (False: it exists with the same config and labels)."""
        return self.create_many(tenant, [(stream, config, labels or {})])[0]

    def _register(
        self, uid: int, tenant: str, stream: str, config: CoreConfig, labels: dict[str, str], created_at: str
    ) -> StreamState:
        """A stream the store has just added: in the engine and the registry."""
        state = self.durability.new_state(uid, tenant, stream, config, created_at)
        state.labels = dict(labels)
        assert self.store is not None
        state.created_mark = state.newest_mark = state.fallback_mark = self.store.last_batch
        self.engine.add_stream(state.key, config)
        state.loaded = state.fresh = True
        self.registry.add(state)
        self.telemetry.streams(len(self.registry))
        return state

    def handover(self, tenant: str, stream: str) -> Handover:
        """The stream, whole, for another shard to ``adopt``."""
        state = self.loaded(tenant, stream)
        assert self.store is not None
        return Handover(
            tenant, stream, state.origin, dict(state.labels), state.created_at, (state.steps, state.events),
            b"".join(pack(self.engine, state).pieces), self.store.alerts_of(state.uid),
        )  # fmt: skip

    def adopt(self, handover: Handover) -> None:
        """A stream another shard handed over, continued exactly: its row, then its alerts (ids kept: a
        single process's counted ones are spread when this shard next opens), then its state as its
        checkpoint, committed (``holds`` tells whether it got that far), and evicted."""
        h, d = handover, self.durability
        labels = json.dumps(h.labels)
        fed = h.counters != (0, 0)  # (a stream as created needs no history)
        uid = d.write(
            lambda s: s.add_stream(h.tenant, h.stream, json.dumps(h.origin.to_dict()), h.created_at, labels, fed)
        )
        rows = [(h.tenant, uid, step, body) for _, step, body in h.alerts]
        d.write(lambda s: s.add_alerts(rows, [id_ for id_, _, _ in h.alerts]))
        state = d.new_state(uid, h.tenant, h.stream, h.origin, h.created_at)
        state.labels, state.fresh = dict(h.labels), not fed
        assert self.store is not None
        state.created_mark = state.newest_mark = state.fallback_mark = self.store.last_batch
        unpack(h.state, self.engine, state)
        state.loaded = True
        self.registry.add(state)
        d.checkpoint(state, evict=True)
        d.writer.flush()
        d.written()
        self.telemetry.streams(len(self.registry))

    def holds(self, handover: Handover) -> bool:
        """Whether the handed-over stream is here as it was handed over (not left half-adopted)."""
        state = self.registry.find(handover.tenant, handover.stream)
        return state is not None and (state.steps, state.events) == handover.counters

    def usage(self, tenant: str) -> Usage:
        return self.registry.usage(tenant)

    def info(self, tenant: str, stream: str) -> StreamInfo:
        return self.registry.get(tenant, stream).info()

    def streams(
        self, tenant: str, limit: int, after: str | None = None, prefix: str = "",
        labels: dict[str, str | None] | None = None,
    ) -> tuple[list[StreamInfo], str | None, int]:  # fmt: skip
        """A page of the tenant's streams by id (``StreamRegistry.page``): their info, the id to continue
        after (None: the last page) and how many match."""
        page = self.registry.page(tenant, limit, after, prefix, labels)
        return [s.info() for s in page.streams], page.after, page.total

    def delete(self, tenant: str, stream: str) -> None:
        self._delete([self.registry.get(tenant, stream)])

    def discard(self, tenant: str, streams: list[str]) -> list[str]:
        """Delete those of ``streams`` still as created (nothing logged for them: no observation acknowledged);
        the ones deleted. A sharded front takes back with it what a bulk creation created here when another
        shard refused its own part."""
        found = (self.registry.find(tenant, stream) for stream in streams)
        states = [state for state in found if state is not None and state.fresh]
        self._delete(states)
        return [state.id for state in states]

    def _delete(self, states: list[StreamState]) -> None:
        """The streams, their models, logs and checkpoints, gone (one transaction)."""
        self.durability.write(lambda s: s.delete_streams([state.uid for state in states]))
        for state in states:
            if state.loaded:
                self.engine.remove_stream(state.key)
            self.registry.remove(state)
        self.telemetry.streams(len(self.registry))

    def patch(self, tenant: str, stream: str, changes: dict[str, Any]) -> tuple[StreamInfo, int]:
        """Apply a merge patch of the stream's config (service/patching.py): logged with the observations
        and durable before it answers. The info after it, and the step from which it applies."""
        state = self.loaded(tenant, stream)
        config, labels = patched(state.config, state.labels, changes)
        relabel = None if labels == state.labels else json.dumps(labels)
        if config != state.config:
            payload = json.dumps(config.to_dict()).encode()
            self.durability.log_event(state, "config", payload, relabel)
            self.durability.apply_event(state, "config", payload)
        elif relabel is not None:
            self.durability.write(lambda s: s.set_labels(state.uid, relabel))
        state.labels = labels
        return state.info(), state.steps + 1

    def reset(self, tenant: str, stream: str, hidden: bool, weights: bool) -> StreamInfo:
        state = self.loaded(tenant, stream)
        if hidden or weights:
            flags = bytes([hidden, weights])
            self.durability.log_event(state, "reset", flags)
            self.durability.apply_event(state, "reset", flags)
        return state.info()

    def predictions(self, tenant: str, stream: str, limit: int | None) -> list[Observed]:
        """The last ``limit`` results with their observations (None: 100, or as many as a reply may carry)."""
        state = self.loaded(tenant, stream)
        kept = state.results
        width = kept.input_size + kept.targets + kept.output_size * (3 + (3 * kept.horizon if kept.horizon > 1 else 0))
        fit = max(1, MAX_REPLY_VALUES // width)
        if limit is not None and limit > fit:
            raise Invalid(
                ("query", "limit"),
                f"at most {fit} results of this stream per reply ({MAX_REPLY_VALUES:,} values: x, y, the "
                f"prediction and its interval and forecasts, {width} each), got {limit}",
            )
        return kept.history(min(limit or DEFAULT_PREDICTIONS, fit))

    def anomalies(self, tenant: str, since: int, limit: int) -> list[Alert]:
        """The tenant's alerts after id ``since``, oldest first."""
        return self.alerts.since(tenant, since, limit)

    def feed(self, tenant: str, since: int, limit: int) -> tuple[list[Alert], int]:
        """A sharded server's: the tenant's alerts after ``since`` here, and an id below every alert this
        shard will store from now on (the front merges the shards' feeds up to the lowest such id)."""
        return self.alerts.since(tenant, since, limit), self.alerts.watermark()

    def metrics(self, tenant: str, stream: str) -> tuple[StreamInfo, StreamMetrics]:
        state = self.loaded(tenant, stream)
        return state.info(), self.engine.metrics(state.key)

    def export_model(self, tenant: str, stream: str) -> bytes:
        state = self.loaded(tenant, stream)
        return write_weights(
            self.engine.export_weights(state.key), state.config, self.engine.prediction_state(state.key)
        )

    def import_model(self, tenant: str, stream: str, data: bytes) -> StreamInfo:
        state = self.loaded(tenant, stream)
        weights = read_weights(data, state.config)  # names, shapes, dtype and finiteness: nothing changes if bad
        self.durability.log_event(state, "import", data)
        self.engine.import_weights(state.key, weights)
        return state.info()
