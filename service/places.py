"""How many of TBPTT_MAX_CONNECTIONS' places (requests in flight, open WebSockets) each tenant may hold.

Counted together, one tenant's sensors, each with a WebSocket open, took every place and locked every other
tenant out. So where the keys name two tenants or more, a tenant holds at most ``cap`` places (three quarters
of them, or TBPTT_MAX_CONNECTIONS_PER_TENANT). A cap alone did not keep a third tenant in: two tenants at
three quarters each took every place between them. So each tenant is also guaranteed a few places (the
places one tenant at its cap leaves, split among the others), and a tenant takes more than its guarantee only
while the places the other tenants are guaranteed and do not use stay free. A tenant alone still reaches its
cap; a tenant whose sensors never connect keeps its guarantee waiting for them.
"""

from __future__ import annotations

from .auth import Keys
from .settings import Settings

TENANT_SHARE = 3 / 4  # of TBPTT_MAX_CONNECTIONS, what one tenant may hold where there are others


class Places:
    """Each tenant's places: ``take`` one if it may, ``give_back`` it when its request or WebSocket ends."""

    def __init__(self, total: int, cap: int, tenants: int) -> None:
        self.total, self.cap = total, cap
        self.guaranteed = min(cap, (total - cap) // (tenants - 1)) if tenants > 1 and total > cap else 0
        self._held: dict[str, int] = {}
        self._held_by_all = 0
        self._kept = tenants * self.guaranteed  # guaranteed places their tenants do not hold

    def refusal(self, tenant: str) -> str | None:
        """Why ``tenant`` may not take another place now (None: it may)."""
        held = self._held.get(tenant, 0)
        if held >= self.cap:
            return f"tenant {tenant} holds {held} requests in flight and WebSockets open, its most"
        if held >= self.guaranteed and self._held_by_all + 1 + self._kept > self.total:
            return f"tenant {tenant} holds {held}; the {self._kept} places left are kept for the other tenants"
        return None

    def take(self, tenant: str) -> None:
        held = self._held.get(tenant, 0)
        self._held[tenant], self._held_by_all = held + 1, self._held_by_all + 1
        self._kept -= held < self.guaranteed

    def give_back(self, tenant: str) -> None:
        held = self._held[tenant] - 1
        if held:
            self._held[tenant] = held
        else:
            del self._held[tenant]
        self._held_by_all -= 1
        self._kept += held < self.guaranteed


def tenant_places(settings: Settings, keys: Keys) -> Places | None:
    """The tenants' ``Places``; None: no limit of a tenant's own (one tenant, or none: everyone is "default",
    has nobody to keep places for; unless TBPTT_MAX_CONNECTIONS_PER_TENANT says otherwise)."""
    tenants = len(keys.tenants())
    if settings.max_connections_per_tenant:
        return Places(settings.max_connections, settings.max_connections_per_tenant, tenants)
    if tenants < 2:
        return None
    return Places(settings.max_connections, max(1, int(settings.max_connections * TENANT_SHARE)), tenants)
