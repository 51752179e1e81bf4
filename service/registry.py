"""The streams a shard knows, by (tenant, id), with the quotas on how many there may be."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tbptt.models import StreamNotFound

from .errors import LimitReached
from .settings import Settings
from .streams import Key, StreamState


def _mib(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


@dataclass(frozen=True, slots=True)
class Usage:
    """What a shard holds against the quotas: streams in all, and one tenant's streams and their bytes."""

    streams: int
    tenant_streams: int
    tenant_bytes: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.streams + other.streams, self.tenant_streams + other.tenant_streams,
            self.tenant_bytes + other.tenant_bytes,
        )  # fmt: skip


@dataclass(frozen=True)
class Page:
    """One page of a tenant's streams, by id: ``after`` is the id to continue from (None: the last page),
    ``total`` how many match the filter."""

    streams: list[StreamState]
    after: str | None
    total: int


class StreamRegistry:
    """Owned by the engine thread: nothing else reads it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._streams: dict[Key, StreamState] = {}
        self._per_tenant: dict[str, int] = {}
        self._bytes: dict[str, int] = {}  # per tenant: what its streams may hold in memory
        self._ids: dict[str, list[str]] = {}  # per tenant, its stream ids in order: pages without sorting

    def __len__(self) -> int:
        return len(self._streams)

    def __iter__(self) -> Iterator[StreamState]:
        return iter(self._streams.values())

    def get(self, tenant: str, stream: str) -> StreamState:
        state = self._streams.get((tenant, stream))
        if state is None:
            raise StreamNotFound(stream)
        return state

    def find(self, tenant: str, stream: str) -> StreamState | None:
        return self._streams.get((tenant, stream))

    def of_tenant(self, tenant: str) -> list[StreamState]:
        """The tenant's streams, by id."""
        return [self._streams[(tenant, i)] for i in self._ids.get(tenant, [])]

    def page(
        self, tenant: str, limit: int, after: str | None = None, prefix: str = "",
        labels: Mapping[str, str | None] | None = None,
    ) -> Page:  # fmt: skip
        """Up to ``limit`` of the tenant's streams whose ids follow ``after`` and start with ``prefix`` and
        whose labels have every key of ``labels`` (with that value, unless None). Stable under creates and
        deletes: a stream is on at most one page, and every stream that exists throughout is on one."""
        ids = self._ids.get(tenant, [])
        first, end = bisect.bisect_left(ids, prefix), bisect.bisect_left(ids, prefix + "\U0010ffff")  # the prefix's
        start = first if after is None else max(first, bisect.bisect_right(ids, after))
        wanted = list((labels or {}).items())

        def matches(stream_id: str) -> bool:
            held = self._streams[(tenant, stream_id)].labels
            return all(key in held and (value is None or held[key] == value) for key, value in wanted)

        found: list[StreamState] = []
        at = start
        while at < end and len(found) <= limit:
            if not wanted or matches(ids[at]):
                found.append(self._streams[(tenant, ids[at])])
            at += 1
        more = len(found) > limit
        total = sum(map(matches, ids[first:end])) if wanted else end - first
        return Page(found[:limit], found[limit - 1].id if more else None, total)

    def usage(self, tenant: str) -> Usage:
        """What this registry holds: streams in all, and the tenant's streams and their bytes."""
        return Usage(len(self._streams), self._per_tenant.get(tenant, 0), self._bytes.get(tenant, 0))

    def check_room(self, tenant: str, state_bytes: int, count: int = 1, elsewhere: Usage | None = None) -> None:
        """A 403 if ``count`` more streams, holding ``state_bytes`` together, would break a quota, counting what
        the other shards hold (``elsewhere``: quotas are the service's, not a shard's)."""
        s, other = self.settings, elsewhere or Usage(0, 0, 0)
        if len(self._streams) + other.streams + count > s.max_streams:
            raise LimitReached(f"the service holds its limit of {s.max_streams} streams (TBPTT_MAX_STREAMS)")
        if self._per_tenant.get(tenant, 0) + other.tenant_streams + count > s.max_streams_per_tenant:
            raise LimitReached(
                f"this tenant holds its limit of {s.max_streams_per_tenant} streams (TBPTT_MAX_STREAMS_PER_TENANT)"
            )
        held, budget = self._bytes.get(tenant, 0) + other.tenant_bytes, s.max_state_bytes_per_tenant
        if held + state_bytes > budget:
            raise LimitReached(
                f"this stream may hold {_mib(state_bytes)} of state and results; this tenant's streams hold "
                f"{_mib(held)} of its {_mib(budget)} (TBPTT_MAX_STATE_BYTES_PER_TENANT): delete streams, or "
                "make this one smaller (hidden_size, num_layers, k2, output_size)"
            )

    def add(self, state: StreamState) -> None:
        self._streams[state.tenant_key] = state
        bisect.insort(self._ids.setdefault(state.tenant, []), state.id)
        self._per_tenant[state.tenant] = self._per_tenant.get(state.tenant, 0) + 1
        self._bytes[state.tenant] = self._bytes.get(state.tenant, 0) + state.state_bytes

    def remove(self, state: StreamState) -> None:
        del self._streams[state.tenant_key]
        ids = self._ids[state.tenant]
        del ids[bisect.bisect_left(ids, state.id)]
        self._per_tenant[state.tenant] -= 1
        self._bytes[state.tenant] -= state.state_bytes
