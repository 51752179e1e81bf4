"""A shard in its own process, served to the front over calls: the body of a Ray actor (service/sharded.py).

The shard (``Shard``) is what the engine thread runs in the single process; here one call at a time is its
only writer (the fronts call over their own connections, service/link.py, each served on a thread of its
own), and every call is synchronous. A front sends its jobs (observation requests and calls, in order, each
with an id), and each call runs one round of the engine thread's schedule (service/scheduling.py), shared
with the calls of other fronts that came meanwhile: a batch is applied in slices, so a call takes about a
slice per unfinished batch, and a small request of one tenant waits for a slice of another's heavy batch,
not all of it. Jobs are answered by id, in the call that finished them or a later one: a front with jobs
unanswered calls again until they are. Each answer to a front also carries its outbox: the batches of the
streams its watchers watch, applied through any front since it last called (service/outboxes.py). Plain
Python: tested without Ray, and Ray is imported by the front only.

A shard that fails while applying a batch may hold half of it: the process exits, and Ray starts it again
(its constructor recovers exactly from its log), as a restart recovers the single process.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric

from . import limits
from .applying import Applying
from .engine_thread import _domain
from .gcpolicy import park_long_lived
from .link import Address, LinkServer, dumps, loads
from .outboxes import LEASE_SECONDS, Lease, Outboxes
from .registry import Usage
from .scheduling import Schedule
from .settings import Settings
from .shard import Checked, Request, Shard
from .streams import Key
from .telemetry import Telemetry
from .wire import Answers, Sent, answers_bytes, request_of

log = logging.getLogger(__name__)

# What a call answers: (its value, None) or (None, the domain error that refused it)
Answer = tuple[Any, BaseException | None]

CHECKED_KEPT = 64  # decoded requests kept between a check and its apply
# Calls that change no stream's config or incarnation: what a check admitted stays admitted across them.
# Every other call (create, delete, patch, reset, import_model, ...) makes the apply check again.
READS = frozenset({
    "check", "check_create_many", "info", "streams", "predictions", "metrics", "export_model", "usage", "feed",
    "template", "missing", "lease", "release",
})  # fmt: skip
CALLS = READS | {"create", "create_many", "delete", "discard", "patch", "reset", "import_model", "set_template"}


@dataclass(slots=True)
class _Job:
    """A front's job here (service/scheduling.py's ``Scheduled``)."""

    front: str
    id: int  # the front's: what it is answered by
    tenant: str | None
    payload: bytes | None = None  # an observation request (service/wire.py's bytes) ...
    call: Callable[[], Answer] | None = None  # ... or a call
    answered: bool = False


@dataclass(slots=True)
class _Arrival:
    """A front's call to ``submit``, until a round takes its jobs."""

    front: str
    jobs: list[Sent]
    watched: frozenset[Key] | None
    told: str = ""  # what the front is told (service/outboxes.py), once served
    served: bool = False


class ShardHost:
    def __init__(self, settings: Settings, index: int) -> None:
        import torch  # the shard's process does the tensor work: its thread count is the shard's

        torch.set_num_threads(settings.torch_threads)
        self.index = index
        self.settings = settings
        self.telemetry = Telemetry(None)
        self.shard = Shard(settings, self.telemetry, index)
        self.outboxes = Outboxes()  # per front: what its watchers get (service/outboxes.py)
        self.lease = Lease(LEASE_SECONDS if _restarted() else 0.0)
        # Requests checked, not yet applied (oldest first): decoded, the streams they were admitted to, and
        # the number of changing calls then (the apply trusts the check if none came since)
        self._checked: dict[bytes, tuple[Request, Checked, int]] = {}
        self._changes = 0
        self.shard.on_applied = self.outboxes.applied
        self.shard.on_alerts = self.outboxes.alerted
        self.schedule: Schedule[_Job] = Schedule(
            self._begin, self._answered, self._failed, settings.engine_slice_ms / 1000
        )
        # The fronts call ``submit`` over their links (service/link.py), each on its own thread, and Ray
        # calls the rest on the actor's: one at a time, as the shard's only writer
        self._lock = threading.Lock()
        self._arrivals: deque[_Arrival] = deque()  # calls to ``submit`` not served by a round yet
        self._link: LinkServer | None = None
        self.shard.open()
        park_long_lived(sharded=True)  # (service/gcpolicy.py)

    def ready(self) -> int:
        """Answered once the shard has recovered (the constructor returned): its index."""
        return self.index

    def link(self) -> tuple[Address, bytes]:
        """Where the fronts call ``submit`` (opened at the first ask), and the key that opens it: on a local
        Ray this machine's loopback, in a cluster this node's address; on ``link_port`` + this shard's index
        if set, else on a port the system picks."""
        if self._link is None:
            host = _node_address() if self.settings.ray_address else "127.0.0.1"
            base = self.settings.link_port
            self._link = LinkServer(host, self._linked, 0 if base is None else base + self.index)
        return self._link.address, self._link.key

    def _linked(self, data: bytes) -> bytes:
        """A front's ``submit`` over its link: (front, jobs, watched) in, its ``Answers`` out."""
        return dumps(self.submit(*loads(data)))

    def submit(self, front: str, jobs: list[Sent], watched: frozenset[Key] | None) -> Answers:
        """``front``'s ``jobs`` (after its earlier ones), with the streams its watchers watch if they changed:
        one round of the schedule, then housekeeping; what was answered for the front since it last called
        (in this round or an earlier one), and its outbox. A call without jobs collects them and goes on with
        the work: every front calls again at once while this shard has work left (a batch applied in slices,
        jobs held behind it), whoever sent it, and every half second while idle. The shard has no thread
        of its own: its work goes on as long as some front calls.

        Calls from other fronts that came while a round ran go into the next round together, whichever of
        them takes the shard first: their observation requests are one batch, as the engine thread batches
        whatever queued meanwhile (a step's cost is mostly per batch, not per observation)."""
        arrival = _Arrival(front, jobs, watched)
        self._arrivals.append(arrival)  # (a deque: appending and popping need no lock)
        with self._lock:
            if not arrival.served:
                self._round()
            return self._answer(front, arrival.told)

    def _round(self) -> None:
        """Every call that has come, in order, then one round of the schedule and housekeeping."""
        while self._arrivals:
            arrival = self._arrivals.popleft()
            front = arrival.front
            arrival.told = self._visit(front, arrival.watched)
            for id, tenant, body in arrival.jobs:
                if isinstance(body, bytes):
                    self.schedule.add(_Job(front, id, tenant, payload=body))
                else:
                    name, args, elsewhere = body
                    self.schedule.add(
                        _Job(front, id, tenant, call=functools.partial(self.call, name, args, elsewhere, front))
                    )
            arrival.served = True
        self.schedule.round()
        try:
            self.shard.tick()
        except BaseException as exc:
            self._failed([], exc)

    def _begin(self, payloads: list[bytes]) -> Applying:
        """A micro-batch of observation requests (``Shard.begin``), each decoded once: a request checked here
        (a request spanning shards) was kept decoded, with what its check admitted, trusted if no changing
        call came since."""
        kept = [self._checked.pop(data, None) for data in payloads]
        decoded = [request_of(data) if k is None else k[0] for data, k in zip(payloads, kept)]
        trusted = [k[1] if k is not None and k[2] == self._changes else None for k in kept]
        return self.shard.begin(decoded, trusted)

    def _answered(self, answered: list[tuple[_Job, Any]]) -> None:
        """Jobs answered (a request's results or what refused it; a call's (value, error)): kept for their
        fronts until they call."""
        for job, outcome in answered:
            if job.call is None and isinstance(outcome, BaseException):
                outcome = _domain(outcome)
            self.outboxes.answer(job.front, job.id, outcome, job.call is not None)

    def _failed(self, jobs: list[_Job], exc: BaseException) -> None:
        """A shard that failed while applying a batch may hold half of it: the process exits, and Ray starts it
        again; its log holds what was applied of the batch, and the restart replays it exactly."""
        log.error("shard %d failed; restarting to recover from its log", self.index, exc_info=exc)
        logging.shutdown()
        os._exit(70)

    def _visit(self, front: str, watched: frozenset[Key] | None) -> str:
        self.outboxes.forget_silent()
        told = self.outboxes.visit(front, watched)
        self.shard.watched = self.outboxes.watched
        return told

    def _answer(self, front: str, told: str) -> Answers:
        answered, applied, alerted, behind = self.outboxes.collect(front)
        self.shard.watched = self.outboxes.watched  # (an outbox that overflowed watches nothing now)
        return answers_bytes(answered, applied, alerted, told or behind, busy=not self.schedule.idle)

    def call(self, name: str, args: tuple, elsewhere: Usage | None = None, front: str | None = None) -> Answer:
        """``Shard.<name>(*args)`` for ``front``, with the quota usage of the other shards when it creates
        streams. A stream deleted: the other fronts' watchers of it are told, through their outboxes."""
        if name not in CALLS:
            raise ValueError(f"not a shard call: {name}")
        if name not in READS:
            self._changes += 1
        self.shard.elsewhere = elsewhere
        try:
            if name == "check":  # (a request as ``apply`` takes it: service/wire.py's bytes)
                return self._check(args[0]), None
            if name in ("lease", "release"):  # (the fronts' one lease lives on shard 0: service/sharded.py)
                return getattr(self.lease, "take" if name == "lease" else "release")(*args), None
            value = getattr(self.shard, name)(*args)
            if name == "delete":
                self.outboxes.gone((args[0], args[1]), but=front)
            if name == "discard":
                for stream in value:
                    self.outboxes.gone((args[0], stream), but=front)
            return value, None
        except Exception as exc:
            return None, _domain(exc)
        finally:
            self.shard.elsewhere = None

    def _check(self, data: bytes) -> int:
        """``Shard.check`` of the request; if it passes, the request is kept decoded for its apply (the next
        call but few, unless another shard refused it) with the streams it was admitted to: equal bytes
        decode to an equal request, so a kept one is always right, and the oldest go. The steps its parts here
        roll forecasts forward (the front sums every shard's: ``limits.check_rollout``)."""
        request = request_of(data)
        states = self.shard.check(*request)
        self._checked[data] = (request, states, self._changes)
        while len(self._checked) > CHECKED_KEPT:
            del self._checked[next(iter(self._checked))]
        return limits.rollout(states, request[1])

    def families(self) -> list[Metric]:
        """This shard's Prometheus metrics (service/telemetry.py's ``per_shard`` labels them)."""
        with self._lock:
            return list(self.telemetry.registry.collect())

    def close(self) -> None:
        """Final checkpoints, then the store closed, then the fronts' link: a graceful stop."""
        with self._lock:
            self.shard.close(failed=False)
        if self._link is not None:  # (outside the lock: a front's call waiting for it fails with the link)
            self._link.close()


def _node_address() -> str:
    """The address Ray knows this node by (where the fronts on other nodes reach it)."""
    import ray.util

    return str(ray.util.get_node_ip_address())


def _restarted() -> bool:
    """Whether this is a Ray actor started again after its process died (plain Python: never)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    with warnings.catch_warnings():  # (Ray 2.5x's own property uses a deprecated one inside)
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
