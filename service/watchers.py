"""Watchers: bounded queues on the event loop that receive every batch applied to a stream (or, keyed by
tenant, every batch of a tenant's alerts).

The engine thread never reads this registry: it reads ``keys``, an immutable set replaced whole whenever
a watcher comes or goes, to know which streams' batches are worth building.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from .settings import Settings
    from .streams import Key

K = TypeVar("K", bound=Hashable)  # (tenant, stream), or a tenant
GONE = "gone"  # a watcher's last item when its stream is deleted (None: when it fell behind)


class Watchers(Generic[K]):
    def __init__(self, on_change: Callable[[frozenset[K]], None]) -> None:
        self._queues: dict[K, set[asyncio.Queue]] = {}
        self._on_change = on_change  # told the new set of watched streams

    def watch(self, key: K, size: int) -> asyncio.Queue:
        """A queue that receives every batch applied to the stream, then None if it falls behind."""
        watcher: asyncio.Queue = asyncio.Queue(maxsize=size)
        self._queues.setdefault(key, set()).add(watcher)
        self._on_change(frozenset(self._queues))
        return watcher

    def unwatch(self, key: K, watcher: asyncio.Queue) -> None:
        watchers = self._queues.get(key)
        if watchers is None:
            return
        watchers.discard(watcher)
        if not watchers:
            del self._queues[key]
            self._on_change(frozenset(self._queues))

    def close(self, key: K) -> None:
        """The stream was deleted: every watcher gets ``GONE`` (after what it has not read yet, if room)."""
        for watcher in self._queues.pop(key, set()):
            if watcher.full():
                watcher.get_nowait()
            watcher.put_nowait(GONE)
        self._on_change(frozenset(self._queues))

    def drop(self, keys: frozenset[K]) -> None:
        """Every watcher of ``keys`` fell behind (None), as a slow one does in ``publish``."""
        for key in keys:
            for watcher in list(self._queues.get(key, ())):
                self._behind(key, watcher)

    def publish(self, batches: dict[K, dict[str, Any]]) -> None:
        """Hand each stream's batch to its watchers; a full (slow) watcher is dropped, never slowing it."""
        for key, batch in batches.items():
            for watcher in list(self._queues.get(key, ())):
                try:
                    watcher.put_nowait(batch)
                except asyncio.QueueFull:
                    self._behind(key, watcher)

    def _behind(self, key: K, watcher: asyncio.Queue) -> None:
        self.unwatch(key, watcher)
        if watcher.full():
            watcher.get_nowait()  # make room for the goodbye
        watcher.put_nowait(None)


class Watching:
    """The watch side of a hub, the same in one process and sharded: ``watchers`` per stream, and
    ``alert_watchers`` per tenant (one process hands them the alerts; a sharded front, wake-ups to read its
    merged feed), each queue bounded by ``settings.watch_queue``."""

    settings: Settings
    watchers: Watchers[Key]
    alert_watchers: Watchers[str]

    def watch(self, tenant: str, stream: str) -> asyncio.Queue:
        return self.watchers.watch((tenant, stream), self.settings.watch_queue)

    def unwatch(self, tenant: str, stream: str, watcher: asyncio.Queue) -> None:
        self.watchers.unwatch((tenant, stream), watcher)

    def watch_anomalies(self, tenant: str) -> asyncio.Queue:
        return self.alert_watchers.watch(tenant, self.settings.watch_queue)

    def unwatch_anomalies(self, tenant: str, watcher: asyncio.Queue) -> None:
        self.alert_watchers.unwatch(tenant, watcher)
