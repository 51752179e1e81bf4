"""The streams a shard knows, by (tenant, id), with the quotas on how many there may be."""

from __future__ import annotations

from collections.abc import Iterator

from tbptt.models import StreamNotFound

from .errors import LimitReached
from .settings import Settings
from .streams import Key, StreamState


def _mib(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


class StreamRegistry:
    """Owned by the engine thread: nothing else reads it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._streams: dict[Key, StreamState] = {}
        self._per_tenant: dict[str, int] = {}
        self._bytes: dict[str, int] = {}  # per tenant: what its streams may hold in memory

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
        return [s for (t, _), s in sorted(self._streams.items()) if t == tenant]

    def check_room(self, tenant: str, state_bytes: int) -> None:
        """A 403 if one more stream, holding ``state_bytes``, would break a quota."""
        s = self.settings
        if len(self._streams) >= s.max_streams:
            raise LimitReached(f"the service holds its limit of {s.max_streams} streams (TBPTT_MAX_STREAMS)")
        if self._per_tenant.get(tenant, 0) >= s.max_streams_per_tenant:
            raise LimitReached(
                f"this tenant holds its limit of {s.max_streams_per_tenant} streams (TBPTT_MAX_STREAMS_PER_TENANT)"
            )
        held, budget = self._bytes.get(tenant, 0), s.max_state_bytes_per_tenant
        if held + state_bytes > budget:
            raise LimitReached(
                f"this stream may hold {_mib(state_bytes)} of state and results; this tenant's streams hold "
                f"{_mib(held)} of its {_mib(budget)} (TBPTT_MAX_STATE_BYTES_PER_TENANT): delete streams, or "
                "make this one smaller (hidden_size, num_layers, k2, output_size)"
            )

    def add(self, state: StreamState) -> None:
        self._streams[state.tenant_key] = state
        self._per_tenant[state.tenant] = self._per_tenant.get(state.tenant, 0) + 1
        self._bytes[state.tenant] = self._bytes.get(state.tenant, 0) + state.state_bytes

    def remove(self, state: StreamState) -> None:
        del self._streams[state.tenant_key]
        self._per_tenant[state.tenant] -= 1
        self._bytes[state.tenant] -= state.state_bytes
