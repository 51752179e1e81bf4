"""A shard in its own process, served to the front over calls: the body of a Ray actor (service/sharded.py).

The shard (``Shard``) is what the engine thread runs in the single process; here the actor's one thread is
its only writer, and every call is synchronous. Each answer carries what the shard told its watchers
meanwhile, for the front to publish. Plain Python: tested without Ray, and Ray is imported by the front only.

A shard that fails while applying a batch may hold half of it: the process exits, and Ray starts it again
(its constructor recovers exactly from its log), as a restart recovers the single process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client.metrics_core import Metric

from .engine_thread import _domain
from .gcpolicy import park_long_lived
from .registry import Usage
from .settings import Settings
from .shard import Request, Shard
from .streams import Key
from .telemetry import Telemetry
from .wire import Answers, Applied, answers_bytes, request_of

log = logging.getLogger(__name__)

# What a call answers: (its value, None) or (None, the domain error that refused it)
Answer = tuple[Any, BaseException | None]

CHECKED_KEPT = 64  # decoded requests kept between a check and its apply
CALLS = frozenset({
    "check", "check_create_many", "create", "create_many", "info", "streams", "delete", "patch", "reset",
    "predictions", "metrics", "export_model", "import_model", "usage", "feed", "template", "set_template",
    "missing",
})  # fmt: skip


class ShardHost:
    def __init__(self, settings: Settings, index: int) -> None:
        import torch  # the shard's process does the tensor work: its thread count is the shard's

        torch.set_num_threads(settings.torch_threads)
        self.index = index
        self.telemetry = Telemetry(None)
        self.shard = Shard(settings, self.telemetry, index)
        self._applied: list[Applied] = []
        self._alerted: set[str] = set()  # tenants with new alerts: the front wakes their feeds' watchers
        self._checked: dict[bytes, Request] = {}  # requests checked, not yet applied (oldest first)
        self.shard.on_applied = self._applied.append
        self.shard.on_alerts = lambda alerts: self._alerted.update(alerts)
        self.shard.open()
        park_long_lived()  # as the single process does (service/gcpolicy.py)

    def ready(self) -> int:
        """Answered once the shard has recovered (the constructor returned): its index."""
        return self.index

    def apply(self, requests: list[bytes], watched: frozenset[Key] | None) -> Answers:
        """A micro-batch of observation requests (``Shard.apply``; each as service/wire.py's bytes), with the
        watched streams if they changed: each request's results or what refused it, what watchers were
        told, and the tenants that got new alerts."""
        if watched is not None:
            self.shard.watched = watched
        try:
            checked = self._checked
            decoded = [checked.pop(data) if data in checked else request_of(data) for data in requests]
            outcomes = [_domain(o) if isinstance(o, BaseException) else o for o in self.shard.apply(decoded)]
            self.shard.tick()
        except BaseException:
            log.exception("shard %d failed while applying a batch; restarting to recover from its log", self.index)
            logging.shutdown()
            os._exit(70)  # what was applied of the batch is in the log: the restart replays it exactly
        applied = self._applied.copy()  # (the shard appends to this very list: emptied, never replaced)
        self._applied.clear()
        alerted = sorted(self._alerted)
        self._alerted.clear()
        return answers_bytes(outcomes, applied, alerted)

    def call(self, name: str, args: tuple, elsewhere: Usage | None = None) -> Answer:
        """``Shard.<name>(*args)``, with the quota usage of the other shards when it creates streams."""
        if name not in CALLS:
            raise ValueError(f"not a shard call: {name}")
        self.shard.elsewhere = elsewhere
        try:
            if name == "check":  # (a request as ``apply`` takes it: service/wire.py's bytes)
                args = self._checking(args[0])
            return getattr(self.shard, name)(*args), None
        except Exception as exc:
            return None, _domain(exc)
        finally:
            self.shard.elsewhere = None

    def _checking(self, data: bytes) -> Request:
        """The request decoded, and kept for its apply (the next call but few, unless another shard refused
        it): equal bytes decode to an equal request, so a kept one is always right, and the oldest go."""
        request = self._checked[data] = request_of(data)
        while len(self._checked) > CHECKED_KEPT:
            del self._checked[next(iter(self._checked))]
        return request

    def families(self) -> list[Metric]:
        """This shard's Prometheus metrics (service/telemetry.py's ``per_shard`` labels them)."""
        return list(self.telemetry.registry.collect())

    def tick(self) -> None:
        self.shard.tick()

    def close(self) -> None:
        """Final checkpoints, then the store closed: a graceful stop."""
        self.shard.close(failed=False)
