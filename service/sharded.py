"""The sharded server's hub: ``Hub``'s verbs over shard processes (Ray actors) that own the streams.

    front (this process: FastAPI, validation, routing)  --one call per micro-batch-->  shard k (ShardHost)

A stream's shard is fixed by its key group (service/keygroups.py). Each shard has a queue here; whatever is
queued for it when its previous call returns goes in one call, over a connection of this front's own to the
shard's process (service/link.py): Ray places, starts and restarts the shards, but a Ray call costs about a
millisecond beyond the work. The shard serves the jobs of every front as the engine thread serves the
single process's (service/scheduling.py): in order, consecutive observation requests as one batch applied
in slices, a tenant's jobs held behind its unfinished batch, one round per call. So per-stream order
holds, a small request of one tenant waits for a slice of another's heavy batch, not all of it, and jobs
are answered by id, in the call that finished them or a later one: while some are unanswered, this front
calls again at once, as every front does while the shard has work left (the shard has no thread of its
own: a batch goes on while fronts call, even when the front that sent it died).

A shard whose process dies is started again by Ray (``max_restarts=-1``) and recovers from its log; Ray
does not retry the calls it was running (``max_task_retries=0``: retried calls may run out of order). Those
requests answer 503 with Retry-After, and so does every request for that shard until it answers again;
the other shards keep serving. A client's retry with the same seqs is answered exactly once: what the dead
shard had logged is replayed, and answers as duplicates.

A request whose streams live on several shards is checked on each (nothing applied) before any applies
it. Quotas are the service's: creations are serialized, over every front, and each counts what the other
shards hold.

With several fronts (``--workers M``: service/cli/fronts.py), the serving process starts the shards and
each front finds them by name. A shard keeps an outbox per front (service/outboxes.py): a front's watchers
see the batches applied through the others, collected with every call and, while idle, every 20 ms to
0.25 s (less often while nothing comes). Creations take a lease on shard ``TEMPLATES`` besides this front's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

from tbptt.models import StreamConfig as CoreConfig
from tbptt.models import StreamMetrics, StreamNotFound

from . import limits
from .alerts import Alert
from .durability import stream_bytes
from .engine_thread import settle
from .errors import Unavailable
from .fastjson import each_spliced
from .ingest import Part, admits, fits, provisional
from .keygroups import Placement
from .link import Link, dumps, loads
from .outboxes import BEHIND, LEASE_SECONDS
from .patching import Template
from .registry import Usage
from .results import Observed, Result
from .settings import Settings
from .streams import Key, StreamInfo
from .telemetry import Telemetry, every_front, per_shard
from .watchers import Watchers, Watching
from .wire import Sent, answers_of, request_bytes, results_of

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5  # a shard's housekeeping while no work comes (as the engine thread's)
RETRY_AFTER = 2  # seconds a client is told to wait while a shard restarts (Ray's restart: ~4 s here)
METRICS_SECONDS = 5  # a shard's metrics are left out of /metrics if it has not answered by then
TEMPLATES = 0  # the shard whose store keeps the tenants' templates and the fronts' lease (one home)
IN_FLIGHT = 2  # calls sent to a shard and not yet answered, at most
# A front of several, with watchers: how often it collects batches applied through the others while they
# come, backing off to the longest while none do (a call costs ~2 ms of CPU in all: 4 idle watchers on 2
# fronts and 2 shards, polled every 20 ms, kept half of this 2-core machine busy)
POLL_SECONDS = 0.02
POLL_LONGEST = 0.25
LEASE_WAIT = 0.005  # seconds between tries for the fronts' lease (creations) while another front holds it


@dataclass(frozen=True)
class Joined:
    """A front of several (``--workers``): the shards are the serving process's, found by name on its Ray."""

    address: str  # the Ray cluster's (its GCS')
    namespace: str
    front: int  # this front's number, 0 to workers - 1


class Shards:
    """The shard actors, started here (a server's only front, or the serving process of several fronts) or
    found by name (a front of several)."""

    def __init__(self, handles: list[Any], started_ray: bool, owned: bool) -> None:
        self.handles, self.started_ray, self.owned = handles, started_ray, owned

    @classmethod
    def start(cls, settings: Settings, namespace: str | None = None) -> Shards:
        """Ray (local unless an address is set), then one actor per shard, each restarted by Ray if its
        process dies, always on the node that holds its data: on a local Ray, this machine; on a cluster,
        the node started with the custom resource ``tbptt-shard-K`` (a shard waits, 503, while no such node
        is up: its data is nowhere else). With a ``namespace``, each is named ``shard-K`` there."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .shard_host import ShardHost

        s = settings
        started = not ray.is_initialized()
        if started:  # ("local": a Ray of its own; with no address Ray joins the cluster started last on the machine)
            address = s.ray_address or "local"
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, namespace=namespace)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        offered = ray.cluster_resources()
        actor = ray.remote(ShardHost)
        placement = Placement.of(s.data_dir, s.shards)
        handles = []
        for k in range(placement.shards):
            shard_settings = s.model_copy(update={"data_dir": placement.folder(s.data_dir, k), "shards": 0})
            placed: dict[str, Any] = {"scheduling_strategy": here}
            if s.ray_address:
                placed = {"resources": {resource_of(k): 0.001}}
                if resource_of(k) not in offered:
                    log.warning("shard %d waits for a node started with the resource %s", k, resource_of(k))
            if namespace is not None:
                placed["name"] = f"shard-{k}"
            handles.append(
                actor.options(max_restarts=-1, max_task_retries=0, num_cpus=0, **placed).remote(shard_settings, k)
            )
        return cls(handles, started, owned=True)

    @classmethod
    def find(cls, joined: Joined, shards: int) -> Shards:
        import ray

        ray.init(address=joined.address, namespace=joined.namespace, logging_level=logging.WARNING)
        return cls([ray.get_actor(f"shard-{k}") for k in range(shards)], started_ray=True, owned=False)

    def stop(self, timeout: float, up: list[bool] | None = None) -> None:
        """Shards started here: their final checkpoints (those ``up``, default all), then gone; and the Ray
        started here, stopped."""
        import ray

        if self.owned:
            closing = [
                h.close.remote() for h, serving in zip(self.handles, up or [True] * len(self.handles)) if serving
            ]
            try:
                ray.get(closing, timeout=max(timeout, 1.0))
            except Exception:
                log.exception("a shard did not close cleanly (its log has everything acknowledged)")
            for handle in self.handles:
                ray.kill(handle, no_restart=True)
        if self.started_ray:
            ray.shutdown()


@dataclass(slots=True)
class _Job:
    future: asyncio.Future
    id: int  # what the shard answers it by
    tenant: str | None  # whose (the shard keeps a tenant's jobs in order); None: anyone's
    payload: bytes | None = None  # an observation request (service/wire.py's bytes) ...
    call: tuple[str, tuple, Usage | None] | None = None  # ... or a call: (name, args, usage elsewhere)

    def sent(self) -> Sent:
        if self.call is not None:
            return self.id, self.tenant, self.call
        assert self.payload is not None
        return self.id, self.tenant, self.payload


@dataclass
class _Remote:
    """One shard as the front sees it."""

    index: int
    handle: Any  # the Ray actor
    link: Link | None = None  # this front's connection to it, while it is up
    jobs: deque[_Job] = field(default_factory=deque)  # queued here
    sent: dict[int, _Job] = field(default_factory=dict)  # sent, not answered yet
    busy: bool = False  # the shard said it has work left (any front's): it goes on while fronts call
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    up: bool = False
    watched: frozenset[Key] | None = frozenset()  # the set last sent (None: send it again)
    poll: float = POLL_SECONDS  # a front of several, with watchers: seconds between calls while idle


class ShardedHub(Watching):
    def __init__(self, settings: Settings, telemetry: Telemetry | None = None, joined: Joined | None = None) -> None:
        self.settings = settings
        self.joined = joined
        self.front = uuid.uuid4().hex  # what the shards know this front by (service/outboxes.py)
        self._ids = itertools.count()  # the jobs' ids
        self._shards: Shards | None = None
        self.telemetry = telemetry or Telemetry(None)
        self.placement = Placement.of(settings.data_dir, settings.shards)
        self.watchers: Watchers[Key] = Watchers(on_change=self._watched)
        self.alert_watchers: Watchers[str] = Watchers(on_change=self._feeds_watched)
        self._feed_tenants: frozenset[str] = frozenset()  # tenants whose alerts feed is watched
        self.failure: BaseException | None = None
        # per shard: the streams this front's watchers watch there (worked out when watchers come and go)
        self._watched_by_shard: list[frozenset[Key]] = [frozenset()] * self.placement.shards
        self._remotes: list[_Remote] = []
        self._tasks: list[asyncio.Task] = []
        self._creating = asyncio.Lock()  # quotas are global: one creation at a time (with the other fronts: lease)
        self._starting: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return bool(self._remotes) and all(r.up for r in self._remotes)

    def shard_status(self) -> list[str]:
        """Per shard: "ok", or "starting" while it starts or restarts."""
        if not self._remotes:
            return ["starting"] * self.placement.shards
        return ["ok" if r.up else "starting" for r in self._remotes]

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._starting = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        try:
            self._shards = await asyncio.to_thread(self._launch)
            _sigterm_back_to_python()
            self._remotes = [_Remote(k, handle) for k, handle in enumerate(self._shards.handles)]
            self._tasks = [asyncio.ensure_future(self._serve(remote)) for remote in self._remotes]
            for remote in self._remotes:
                self._tasks.append(asyncio.ensure_future(self._await_ready(remote)))
        except BaseException as exc:
            self.failure = exc
            log.exception("the shards could not be started")

    async def joining(self, timeout: float) -> None:
        """A front of several: until it has found the shards and each answers (at most ``timeout`` seconds:
        a shard that is down meanwhile answers 503 for its streams, as it would anyway). A front accepts
        connections only after this, so a front started again costs its clients nothing."""
        assert self._starting is not None
        await self._starting
        deadline = time.monotonic() + timeout
        while not self.ready and self.failure is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _launch(self) -> Shards:
        if self.joined is not None:
            return Shards.find(self.joined, self.placement.shards)
        return Shards.start(self.settings)

    async def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued; then, if this front started the shards, their final checkpoints; stop the
        Ray this front started (or leave the one it joined). All within ``timeout`` (by default the shutdown
        timeout)."""
        if self._starting is not None:
            await self._starting
        deadline = time.monotonic() + (self.settings.shutdown_timeout if timeout is None else timeout)
        while any(r.jobs or r.sent for r in self._remotes if r.up) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        for remote in self._remotes:
            if remote.link is not None:
                remote.link.close()
        if self._shards is not None:
            up = [remote.up for remote in self._remotes]
            await asyncio.to_thread(self._shards.stop, deadline - time.monotonic(), up)

    # -- the calls to one shard ------------------------------------------------------------------------------

    async def _await_ready(self, remote: _Remote) -> None:
        """Until the shard answers (it recovered from its log): then it serves again."""
        while True:
            try:
                await remote.handle.ready.remote()
                remote.link = await Link.open(*await remote.handle.link.remote())
            except Exception as exc:
                log.info("shard %d not ready yet (%s)", remote.index, type(exc).__name__)
                await asyncio.sleep(0.2)
                continue
            remote.up, remote.watched = True, None
            remote.wake.set()
            self._wake_feeds()  # (its recovery may have stored alerts)
            log.info("shard %d is serving", remote.index)
            return

    def _down(self, remote: _Remote, exc: BaseException) -> None:
        if remote.link is not None and remote.link.failure is None:
            return  # (a call lost with an earlier link: the shard is back already, on a new one)
        if remote.up:
            log.warning("shard %d is down (%s); its streams answer 503 until it is back", remote.index, exc)
            remote.up = False
            if remote.link is not None:
                remote.link.close()
            self._tasks.append(asyncio.ensure_future(self._await_ready(remote)))
            self._wake_feeds()  # (their watchers learn at once that the feed is not whole meanwhile)
        for job in [*remote.jobs, *remote.sent.values()]:  # (the shard's process lost what it held)
            settle(job.future, error=self._unavailable(remote))
        remote.jobs.clear()
        remote.sent.clear()
        remote.busy = False

    def _unavailable(self, remote: _Remote) -> Unavailable:
        return Unavailable(f"shard {remote.index} is restarting; try again shortly", retry_after=RETRY_AFTER)

    def _submit(self, shard: int, job: _Job) -> asyncio.Future:
        if self.failure is not None:
            raise Unavailable("the shards could not be started: see the server's log")
        if not self._remotes:
            raise Unavailable("the service is starting; try again shortly", retry_after=1)
        remote = self._remotes[shard]
        if not remote.up:
            raise self._unavailable(remote)
        remote.jobs.append(job)
        remote.wake.set()
        return job.future

    async def _call(
        self, shard: int, name: str, *args: Any, elsewhere: Usage | None = None, tenant: str | None = None
    ) -> Any:
        """``Shard.<name>(*args)`` on the shard, after the earlier jobs of ``tenant`` (by default the first
        argument, which most calls' is; the fronts' lease is anyone's)."""
        if tenant is None and name not in ("lease", "release"):
            tenant = args[0]
        future = asyncio.get_running_loop().create_future()
        return await self._submit(shard, _Job(future, next(self._ids), tenant, call=(name, args, elsewhere)))

    async def _apply(self, shard: int, tenant: str, request: bytes) -> list[bytes]:
        """An observation request of ``tenant`` (service/wire.py's bytes) applied on the shard: its results
        per part, as JSON."""
        future = asyncio.get_running_loop().create_future()
        return await self._submit(shard, _Job(future, next(self._ids), tenant, payload=request))

    async def _serve(self, remote: _Remote) -> None:
        """Send what is queued for the shard, up to ``IN_FLIGHT`` calls at a time: the shard runs them in the
        order sent (Ray keeps one caller's calls to an actor in order), and works on the next batch while
        this process encodes the last one's answers and parses new requests. While jobs sent are not
        answered (a batch applied in slices, or held behind one), call again at once to collect them."""
        sending: set[asyncio.Future] = set()
        last: asyncio.Future | None = None  # the call sent last: the next one's answers wait for its own
        while True:
            if len(sending) >= IN_FLIGHT or (sending and not remote.jobs):
                _, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                continue
            if not remote.jobs or not remote.up:
                if remote.up and (remote.busy or remote.sent or remote.watched is not self._shard_watched(remote)):
                    await self._tick(remote)  # (work going on there, jobs to collect, or a watcher came or went)
                    continue
                remote.wake.clear()
                try:
                    await asyncio.wait_for(remote.wake.wait(), self._idle_seconds(remote))
                except TimeoutError:
                    if remote.up:
                        await self._tick(remote)
                continue
            jobs = [remote.jobs.popleft()]  # a call alone (its answer may be large: others need not wait for it),
            while jobs[0].call is None and remote.jobs and remote.jobs[0].call is None:  # or observation requests
                jobs.append(remote.jobs.popleft())
            remote.sent.update((job.id, job) for job in jobs)
            answers = self._submitted(remote, [job.sent() for job in jobs])
            last = asyncio.ensure_future(self._send(remote, answers, last))
            sending.add(last)

    def _news(self, remote: _Remote) -> frozenset[Key] | None:
        """The streams this front watches on the shard if they changed since last sent (None: unchanged; a
        new set is made whenever a watcher comes or goes, so that comparing is an identity check)."""
        wanted = self._shard_watched(remote)
        if remote.watched is wanted:
            return None
        remote.watched = wanted
        return wanted

    async def _tick(self, remote: _Remote) -> None:
        """A call with no new jobs: the shard's round and housekeeping, which also collects this front's
        answers and outbox."""
        await self._send(remote, self._submitted(remote, []))

    def _submitted(self, remote: _Remote, jobs: list[Sent]) -> asyncio.Future[bytes]:
        """``ShardHost.submit`` of ``jobs`` over the link: the future of its answers (``link.loads`` reads them)."""
        assert remote.link is not None
        return remote.link.call(dumps((self.front, jobs, self._news(remote))))

    def _idle_seconds(self, remote: _Remote) -> float:
        """How long the shard may go without a call: a front of several collects batches applied through
        the others for its watchers every ``remote.poll`` seconds."""
        watching = remote.watched or self._feed_tenants
        return remote.poll if self.joined is not None and watching else TICK_SECONDS

    async def _send(
        self, remote: _Remote, answers: asyncio.Future[bytes], previous: asyncio.Future | None = None
    ) -> None:
        """Await a call's ``answers`` (``_submitted``'s) and hand them out, after the ``previous`` call's:
        watchers see a stream's batches in the order they were applied."""
        try:
            answer = await answers
        except Exception as exc:  # the shard's process died (Ray restarts it): what it held is not answered
            self._down(remote, exc)
            return
        if previous is not None:
            await previous
        answered, applied, alerted, told, remote.busy = answers_of(loads(answer))
        for id, outcome in answered:
            job = remote.sent.pop(id, None)
            if job is None:  # (answered as unavailable when the shard was thought down)
                continue
            if job.call is not None:
                settle(job.future, *outcome)
            elif isinstance(outcome, BaseException):
                settle(job.future, error=outcome)
            else:
                settle(job.future, outcome)
        if applied or alerted:
            remote.poll = POLL_SECONDS
        elif not answered:  # a poll that found nothing
            remote.poll = min(2 * remote.poll, POLL_LONGEST)
        for batches in applied:
            for key in [key for key, batch in batches.items() if batch is None]:  # deleted through another front
                self.watchers.close(key)
            self.watchers.publish({key: batch for key, batch in batches.items() if batch is not None})
        self.alert_watchers.publish({tenant: {} for tenant in alerted})  # a wake-up: they read the feed
        if told == BEHIND:  # this front did not collect for too long: its watchers there fell behind
            self.watchers.drop(self._shard_watched(remote))
        if told:  # (the shard does not know what this front watches: it is sent with the next call)
            remote.watched = None
            remote.wake.set()

    async def metric_families(self) -> list[Metric]:
        """The front's HTTP metrics and every serving shard's others, labelled with its index; a shard that
        does not answer within a few seconds is left out (its series come back with it)."""

        async def of(remote: _Remote) -> list[Metric] | None:
            try:
                return await asyncio.wait_for(remote.handle.families.remote(), METRICS_SECONDS)
            except Exception as exc:
                log.info("shard %d gave no metrics (%s)", remote.index, type(exc).__name__)
                return None

        up = [remote for remote in self._remotes if remote.up]
        answers = await asyncio.gather(*(of(remote) for remote in up))
        shards = {remote.index: families for remote, families in zip(up, answers) if families is not None}
        return per_shard(self.telemetry.registry if self.joined is None else every_front(), shards)

    def _feeds_watched(self, tenants: frozenset[str]) -> None:
        self._feed_tenants = tenants

    def _wake_feeds(self) -> None:
        """Every alerts watcher reads its feed again."""
        self.alert_watchers.publish({tenant: {} for tenant in self._feed_tenants})

    def _shard_watched(self, remote: _Remote) -> frozenset[Key]:
        return self._watched_by_shard[remote.index]

    def _watched(self, keys: frozenset[Key]) -> None:
        by_shard: list[set[Key]] = [set() for _ in range(self.placement.shards)]
        for key in keys:
            by_shard[self.placement.shard_of(*key)].add(key)
        self._watched_by_shard = [frozenset(shard_keys) for shard_keys in by_shard]
        for remote in self._remotes:
            remote.wake.set()

    @contextlib.asynccontextmanager
    async def _creation(self) -> AsyncIterator[None]:
        """One creation (or deletion) at a time over every front: this front's lock, then the fronts' lease
        on shard ``TEMPLATES`` (service/outboxes.py), given back after."""
        async with self._creating:
            deadline = time.monotonic() + 2 * LEASE_SECONDS
            while wait := await self._call(TEMPLATES, "lease", self.front, LEASE_SECONDS):
                if time.monotonic() > deadline:
                    raise Unavailable("another front holds the lease on creations; try again shortly", retry_after=1)
                await asyncio.sleep(min(wait, LEASE_WAIT))
            try:
                yield
            finally:
                with contextlib.suppress(Unavailable):  # (a shard restarted meanwhile forgot it anyway)
                    await self._call(TEMPLATES, "release", self.front)

    def _shard_of(self, tenant: str, stream: str) -> int:
        return self.placement.shard_of(tenant, stream)

    def _by_shard(self, tenant: str, streams: list[str]) -> dict[int, list[int]]:
        """The positions of ``streams`` grouped by the shard that owns each, in order."""
        by_shard: dict[int, list[int]] = {}
        for k, stream in enumerate(streams):
            by_shard.setdefault(self._shard_of(tenant, stream), []).append(k)
        return by_shard

    async def _usage(self, tenant: str, but: int | None = None) -> dict[int, Usage]:
        """What each shard (but ``but``) holds against the quotas."""
        shards = [k for k in range(self.placement.shards) if k != but]
        return dict(zip(shards, await asyncio.gather(*(self._call(k, "usage", tenant) for k in shards))))

    async def _elsewhere(self, tenant: str, shard: int) -> Usage:
        """What the shards other than ``shard`` hold against the quotas."""
        return _total((await self._usage(tenant, but=shard)).values())

    # -- observations --------------------------------------------------------------------------------------

    async def observe(self, tenant: str, parts: list[Part]) -> list[list[Result]]:
        """Apply observations to one or more streams, all or none; the results per part, in order."""
        return [results_of(piece) for piece in await self._pieces(tenant, parts)]

    async def observe_each(self, tenant: str, parts: list[Part]) -> bytes:
        """``observe`` of parts of one observation each (a cross-stream request): the reply's ``results``, JSON,
        made of the shards' JSON unread."""
        return each_spliced([part.stream for part in parts], await self._pieces(tenant, parts))

    async def _pieces(self, tenant: str, parts: list[Part]) -> list[bytes]:
        """``observe``'s results per part, still JSON (as the shards wrote them). Parts on several shards:
        checked on every shard first, then applied on each. Unknown streams: created from the tenant's
        template, if it has one, once every part has passed its checks."""
        try:
            return await self._observe(tenant, parts)
        except StreamNotFound:
            template = await self.template(tenant)
            if template is None:
                raise
        await self._create_from(template, tenant, parts)
        return await self._observe(tenant, parts)

    async def _create_from(self, template: Template, tenant: str, parts: list[Part]) -> None:
        """The unknown streams of a request, created from ``template`` (as one process does, but here, where
        the quotas are counted over every shard) once every part has passed its checks: a refused request
        creates nothing."""
        by_shard = self._by_shard(tenant, [part.stream for part in parts])
        answers = await asyncio.gather(
            *(self._call(k, "missing", tenant, [parts[i].stream for i in ks]) for k, ks in by_shard.items())
        )
        unknown = {stream for streams in answers for stream in streams}
        new: list[Part] = []
        known: list[Part] = []
        for part in parts:  # (a socket's own stream, gone, is not created again: its check says not found)
            (new if part.stream in unknown and part.incarnation is None else known).append(part)
        for part in new:
            fits(template.config, part)
        rolled = 0  # (the steps the new streams' parts roll forecasts forward)
        if new:  # (as the single process: a request its plan would refuse creates nothing)
            retained = self.settings.results_retained
            states = {p.stream: provisional(tenant, p.stream, template.config, retained) for p in new}
            rolled = limits.rollout([states[p.stream] for p in new], new)
            limits.check_rolled(rolled, self.settings)
            admits([states[p.stream] for p in new], new)
        if known:
            await self._check(tenant, self._by_shard(tenant, [p.stream for p in known]), known, rolled)
        streams = dict.fromkeys(part.stream for part in new)
        await self.create_many(tenant, [(stream, template.config, template.labels) for stream in streams])

    async def _check(
        self, tenant: str, by_shard: dict[int, list[int]], parts: list[Part], rolled: int = 0
    ) -> dict[int, bytes]:
        """Each shard's share of a request checked there, nothing applied; those shares, encoded. The steps the
        shares roll forecasts forward are summed (with ``rolled``, counted elsewhere) against the request's
        limit, as one process counts them (each shard sees its share only)."""
        requests = {shard: request_bytes((tenant, [parts[k] for k in ks])) for shard, ks in by_shard.items()}
        shares = await asyncio.gather(
            *(self._call(shard, "check", request, tenant=tenant) for shard, request in requests.items())
        )
        limits.check_rolled(rolled + sum(shares), self.settings)
        return requests

    async def _observe(self, tenant: str, parts: list[Part]) -> list[bytes]:
        by_shard = self._by_shard(tenant, [part.stream for part in parts])
        if len(by_shard) == 1:
            (shard,) = by_shard
            return await self._apply(shard, tenant, request_bytes((tenant, parts)))
        requests = await self._check(tenant, by_shard, parts)
        answers = await asyncio.gather(
            *(self._apply(shard, tenant, request) for shard, request in requests.items()), return_exceptions=True
        )
        failed = [a for a in answers if isinstance(a, BaseException)]
        if failed:
            unavailable = [a for a in failed if isinstance(a, Unavailable)]
            if unavailable and len(unavailable) < len(answers):
                raise Unavailable(
                    f"{unavailable[0]} (the parts of this request on other shards were applied: a retry with "
                    "the same seqs completes it, each part once)",
                    retry_after=RETRY_AFTER,
                )
            raise failed[0]
        pieces: list[bytes] = [b""] * len(parts)
        for ks, answer in zip(by_shard.values(), answers):
            assert isinstance(answer, list)
            for k, piece in zip(ks, answer):
                pieces[k] = piece
        return pieces

    # -- streams -------------------------------------------------------------------------------------------

    async def create(
        self, tenant: str, stream: str, config: CoreConfig, labels: dict[str, str] | None = None
    ) -> tuple[StreamInfo, bool]:
        shard = self._shard_of(tenant, stream)
        async with self._creation():
            elsewhere = await self._elsewhere(tenant, shard)
            return await self._call(shard, "create", tenant, stream, config, labels, elsewhere=elsewhere)

    async def create_many(
        self, tenant: str, streams: list[tuple[str, CoreConfig, dict[str, str]]]
    ) -> list[tuple[StreamInfo, bool]]:
        """All or nothing: conflicts and quotas checked on every shard first (the quotas counting every
        shard's new streams), then each shard creates its own."""
        by_shard = self._by_shard(tenant, [stream for stream, _, _ in streams])
        async with self._creation():
            usage = await self._usage(tenant)
            for shard, ks in by_shard.items():
                others = _total([*(used for k, used in usage.items() if k != shard),
                                 _claimed(streams, by_shard, shard, self.settings)])  # fmt: skip
                await self._call(shard, "check_create_many", tenant, [streams[k] for k in ks], elsewhere=others)
            created: list[tuple[StreamInfo, bool]] = [None] * len(streams)  # type: ignore[list-item]
            done: list[int] = []  # the shards that created their part
            try:
                for shard, ks in by_shard.items():  # (each counting what the shards before it created)
                    others = await self._elsewhere(tenant, shard)
                    answer = await self._call(shard, "create_many", tenant, [streams[k] for k in ks], elsewhere=others)
                    for k, one in zip(ks, answer):
                        created[k] = one
                    done.append(shard)
            except Exception:  # (a shard's store refused: the others' new streams are taken back, as one process)
                await self._discard(tenant, {k: [streams[i][0] for i in by_shard[k] if created[i][1]] for k in done})
                raise
            return created

    async def _discard(self, tenant: str, by_shard: dict[int, list[str]]) -> None:
        """Take back what a bulk creation created on these shards: each stream still as created (one that was
        fed meanwhile stays: what was acknowledged of it is never dropped). Best effort: a shard that cannot is
        logged."""
        for shard, streams in by_shard.items():
            if streams:
                try:
                    await self._call(shard, "discard", tenant, streams)
                except Exception as exc:  # (the creation's own error is what the client is told)
                    log.warning("shard %d kept %d streams of a refused bulk creation: %s", shard, len(streams), exc)

    async def template(self, tenant: str) -> Template | None:
        return await self._call(TEMPLATES, "template", tenant)

    async def set_template(self, tenant: str, template: Template | None) -> None:
        await self._call(TEMPLATES, "set_template", tenant, template)

    async def info(self, tenant: str, stream: str) -> StreamInfo:
        return await self._call(self._shard_of(tenant, stream), "info", tenant, stream)

    async def streams(
        self, tenant: str, limit: int, after: str | None = None, prefix: str = "",
        labels: dict[str, str | None] | None = None,
    ) -> tuple[list[StreamInfo], str | None, int]:  # fmt: skip
        """A page of the tenant's streams by id, merged from every shard's page."""
        pages = await asyncio.gather(
            *(self._call(k, "streams", tenant, limit, after, prefix, labels) for k in range(self.placement.shards))
        )
        merged = sorted((info for infos, _, _ in pages for info in infos), key=lambda info: info.id)
        more = len(merged) > limit or any(next_after is not None for _, next_after, _ in pages)
        page = merged[:limit]
        return page, (page[-1].id if more and page else None), sum(total for _, _, total in pages)

    async def delete(self, tenant: str, stream: str) -> None:
        async with self._creation():  # (a deletion frees room another creation may be counting)
            await self._call(self._shard_of(tenant, stream), "delete", tenant, stream)
        self.watchers.close((tenant, stream))

    async def patch(self, tenant: str, stream: str, changes: dict[str, Any]) -> tuple[StreamInfo, int]:
        return await self._call(self._shard_of(tenant, stream), "patch", tenant, stream, changes)

    async def reset(self, tenant: str, stream: str, hidden: bool, weights: bool) -> StreamInfo:
        return await self._call(self._shard_of(tenant, stream), "reset", tenant, stream, hidden, weights)

    async def predictions(self, tenant: str, stream: str, limit: int | None) -> list[Observed]:
        return await self._call(self._shard_of(tenant, stream), "predictions", tenant, stream, limit)

    async def anomalies(self, tenant: str, since: int, limit: int) -> list[Alert]:
        return (await self.feed(tenant, since, limit))[0]

    async def feed(self, tenant: str, since: int, limit: int) -> tuple[list[Alert], int, bool]:
        """The tenant's alerts after ``since`` over every shard, oldest first, at most ``limit``; how far
        the feed is known: every alert up to that id is in it (those after ``since``), and none a shard
        stores later will be (service/alerts.py); and whether newer ones were held back. A shard that lags
        (its clock, or its alerts not stored yet) holds the others' newer alerts back until it passes them:
        none is ever skipped."""
        pages = await asyncio.gather(
            *(self._call(k, "feed", tenant, since, limit) for k in range(self.placement.shards))
        )
        return merge_feeds(pages, limit)

    async def metrics(self, tenant: str, stream: str) -> tuple[StreamInfo, StreamMetrics]:
        return await self._call(self._shard_of(tenant, stream), "metrics", tenant, stream)

    async def export_model(self, tenant: str, stream: str) -> bytes:
        return await self._call(self._shard_of(tenant, stream), "export_model", tenant, stream)

    async def import_model(self, tenant: str, stream: str, data: bytes) -> StreamInfo:
        return await self._call(self._shard_of(tenant, stream), "import_model", tenant, stream, data)


def merge_feeds(pages: list[tuple[list[Alert], int]], limit: int) -> tuple[list[Alert], int, bool]:
    """The shards' pages of one feed (each: up to ``limit`` alerts after the same id, and the shard's
    watermark) as one page, the id up to which it is complete, and whether alerts after that id were held
    back (known already, served by the next read). A full page says nothing beyond its last alert; any
    other, nothing below its shard's watermark is missing."""
    known = min(alerts[-1]["id"] if len(alerts) == limit else watermark for alerts, watermark in pages)
    merged = sorted((a for alerts, _ in pages for a in alerts if a["id"] <= known), key=lambda a: a["id"])
    held = len(merged) > limit or any(alerts and alerts[-1]["id"] > known for alerts, _ in pages)
    return merged[:limit], (merged[limit - 1]["id"] if len(merged) > limit else known), held


def resource_of(shard: int) -> str:
    """The Ray custom resource of the node that holds shard ``shard``'s data, in a cluster."""
    return f"tbptt-shard-{shard}"


def _claimed(
    streams: list[tuple[str, CoreConfig, dict[str, str]]], by_shard: dict[int, list[int]], shard: int,
    settings: Settings,
) -> Usage:  # fmt: skip
    """What the request's streams for the other shards will hold (counted as if none existed yet: a
    conservative check, exact for the usual request of new streams)."""
    count, held = 0, 0
    for k, ks in by_shard.items():
        if k != shard:
            count += len({streams[i][0] for i in ks})
            held += sum(stream_bytes(streams[i][1], settings) for i in ks)
    return Usage(count, count, held)


def _total(usages: Iterable[Usage]) -> Usage:
    return sum(usages, Usage(0, 0, 0))


def _sigterm_back_to_python() -> None:
    """``ray.init`` puts abseil's failure handler in front of SIGTERM's (ray-project/ray#64830): it prints a stack
    trace and arms a 3 s alarm that aborts the process (SIGABRT, exit -6, the final checkpoints cut short) unless
    it has exited by then, and a graceful shutdown that waits for requests in flight or for the shards' final
    checkpoints takes longer (a CI run's did). Python's handler set again (on the main thread: only it may; the
    event loop's under uvicorn) takes abseil out of SIGTERM's way."""
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signal.SIGTERM)
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
