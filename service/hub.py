"""The hub: the event loop's side of the service. Async verbs over the shard, run on the engine thread.

    await hub.create(tenant, "pump-7", config)  ->  (StreamInfo, created)
    await hub.observe(tenant, [Part("pump-7", [Incoming(x, y, seq)])])  ->  results per part

Verbs return domain objects (``StreamInfo``, results as dicts); routes build the response schemas. The
shard's state is only ever touched on the engine thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tbptt.models import StreamConfig as CoreConfig
from tbptt.models import StreamMetrics

from .alerts import Alert
from .engine_thread import EngineThread
from .fastjson import each_dumps
from .ingest import Part
from .patching import Template
from .results import Observed, Result
from .settings import Settings
from .shard import Shard
from .streams import Key, StreamInfo
from .telemetry import Telemetry
from .watchers import Watchers, Watching


class Hub(Watching):
    def __init__(self, settings: Settings, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.shard = Shard(settings, telemetry or Telemetry(None))
        self.engine = EngineThread(
            self.shard, settings.batch_wait_ms / 1000, settings.torch_threads, settings.engine_slice_ms / 1000
        )
        self.watchers: Watchers[Key] = Watchers(on_change=self._watched)
        self.alert_watchers: Watchers[str] = Watchers(
            on_change=lambda tenants: None
        )  # alerts are rare: always handed over
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def ready(self) -> bool:
        return self.engine.ready

    @property
    def failure(self) -> BaseException | None:
        return self.engine.failure

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.shard.on_applied = self._applied
        self.shard.on_alerts = self._alerted
        self.engine.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Finish queued work, checkpoint every stream, close the store (bounded by ``timeout``, by default
        the shutdown timeout)."""
        await self.engine.stop(self.settings.shutdown_timeout if timeout is None else timeout)

    # -- observations --------------------------------------------------------------------------------------

    async def observe(self, tenant: str, parts: list[Part]) -> list[list[Result]]:
        """Apply observations to one or more streams, all or none; the results per part, in order."""
        return await self.engine.observe(tenant, (tenant, parts))

    async def observe_each(self, tenant: str, parts: list[Part]) -> bytes:
        """``observe`` of parts of one observation each (a cross-stream request): the reply's ``results``, JSON."""
        return each_dumps([part.stream for part in parts], await self.observe(tenant, parts))

    # -- streams -------------------------------------------------------------------------------------------

    async def create(
        self, tenant: str, stream: str, config: CoreConfig, labels: dict[str, str] | None = None
    ) -> tuple[StreamInfo, bool]:
        """Create a stream; (its info, False) if it exists with the same config and labels."""
        return await self.engine.call(tenant, self.shard.create, tenant, stream, config, labels)

    async def create_many(
        self, tenant: str, streams: list[tuple[str, CoreConfig, dict[str, str]]]
    ) -> list[tuple[StreamInfo, bool]]:
        """Create streams (each: id, config, labels); conflicts and quotas checked for all first."""
        return await self.engine.call(tenant, self.shard.create_many, tenant, streams)

    async def template(self, tenant: str) -> Template | None:
        return await self.engine.call(tenant, self.shard.template, tenant)

    async def set_template(self, tenant: str, template: Template | None) -> None:
        await self.engine.call(tenant, self.shard.set_template, tenant, template)

    async def info(self, tenant: str, stream: str) -> StreamInfo:
        return await self.engine.call(tenant, self.shard.info, tenant, stream)

    async def streams(
        self, tenant: str, limit: int, after: str | None = None, prefix: str = "",
        labels: dict[str, str | None] | None = None,
    ) -> tuple[list[StreamInfo], str | None, int]:  # fmt: skip
        """A page of the tenant's streams: (their info, the id to continue after, how many match)."""
        return await self.engine.call(tenant, self.shard.streams, tenant, limit, after, prefix, labels)

    async def delete(self, tenant: str, stream: str) -> None:
        await self.engine.call(tenant, self.shard.delete, tenant, stream)
        self.watchers.close((tenant, stream))  # they watched this stream, not one created later with its id

    async def patch(self, tenant: str, stream: str, changes: dict[str, Any]) -> tuple[StreamInfo, int]:
        """Change a live stream (a merge patch of its config): its info, and the step the change applies from."""
        return await self.engine.call(tenant, self.shard.patch, tenant, stream, changes)

    async def reset(self, tenant: str, stream: str, hidden: bool, weights: bool) -> StreamInfo:
        return await self.engine.call(tenant, self.shard.reset, tenant, stream, hidden, weights)

    async def predictions(self, tenant: str, stream: str, limit: int | None) -> list[Observed]:
        return await self.engine.call(tenant, self.shard.predictions, tenant, stream, limit)

    async def anomalies(self, tenant: str, since: int, limit: int) -> list[Alert]:
        return await self.engine.call(tenant, self.shard.anomalies, tenant, since, limit)

    async def metrics(self, tenant: str, stream: str) -> tuple[StreamInfo, StreamMetrics]:
        return await self.engine.call(tenant, self.shard.metrics, tenant, stream)

    async def export_model(self, tenant: str, stream: str) -> bytes:
        return await self.engine.call(tenant, self.shard.export_model, tenant, stream)

    async def import_model(self, tenant: str, stream: str, data: bytes) -> StreamInfo:
        return await self.engine.call(tenant, self.shard.import_model, tenant, stream, data)

    # -- watchers ------------------------------------------------------------------------------------------

    def _watched(self, keys: frozenset[Key]) -> None:
        self.shard.watched = keys  # one reference swapped: the engine thread sees the old set or the new

    def _applied(self, batches: dict) -> None:
        """On the engine thread: what watched streams got, handed over to the event loop."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.watchers.publish, batches)

    def _alerted(self, alerts: dict[str, list[Alert]]) -> None:
        """On the engine thread: new alerts per tenant, handed over to the event loop."""
        assert self._loop is not None
        batches = {tenant: {"anomalies": found} for tenant, found in alerts.items()}
        self._loop.call_soon_threadsafe(self.alert_watchers.publish, batches)
