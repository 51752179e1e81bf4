"""A tenant's alerts feed: every observation judged anomalous, kept in the store and pushed to watchers.

An alert says what was judged: the stream, the observation (``seq``, ``step``) whose target reached the
stream's ``anomaly_threshold``, that target (``value``), the prediction it was judged against with that
prediction's ``interval``, and the ``score``. In forecast mode observation t's target is its own x, judged
against the prediction made at t-1 (the previous result's); in explicit mode, its y against its own.

Alerts are built on the engine thread after a slice is applied, and again when the log is replayed at a
restart: the store keeps one per (stream incarnation, step), so an alert whose write a crash prevented
comes back with the replay, and one already kept is not repeated.

A single process numbers its alerts 1, 2, 3, ... (the store's). A sharded server's front merges every
shard's alerts into one feed, so a shard's ids (``ShardAlertIds``) are unique among shards and follow the
clock, and each shard can promise a ``watermark``: every id it gives from now on is above it. The front
serves alerts up to the lowest shard's watermark only, so a feed read with ``since`` never skips an alert
that a slower shard stores later (service/sharded.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tbptt.models import Results

from .episodes import opens_episode
from .results import calibrated
from .store import Store, StoreUnavailable
from .streams import StreamState, now_iso
from .telemetry import Telemetry

log = logging.getLogger(__name__)

UNSAVED_LIMIT = 10_000  # alerts held while the store refuses writes (the oldest go first beyond)

Alert = dict[str, Any]  # as the feed serves it: {"id", "stream", "seq", "step", "at", "value", ...}
STRIDE = 128  # a sharded server's alert id: microseconds since 1970 x 128 + the shard's index (< 128 shards)
# ids below: counted 1, 2, 3, ... (a shard's from before its ids followed the clock), moved above it once
COUNTED = 1 << 50


class ShardAlertIds:
    """A shard's alert ids: increasing, ``index`` modulo ``STRIDE`` (unique among shards), and never below
    the clock in microseconds (times ``STRIDE``), so that shards' ids interleave as their alerts happen."""

    def __init__(self, index: int, last: int) -> None:
        self.index = index
        self._time = last // STRIDE  # the last microsecond given out or promised

    def take(self, count: int) -> list[int]:
        start = max(self._time + 1, time.time_ns() // 1000)
        self._time = start + count - 1
        return [(start + k) * STRIDE + self.index for k in range(count)]

    def watermark(self) -> int:
        """An id below every id ``take`` gives from now on (and above every one it gave)."""
        self._time = max(self._time, time.time_ns() // 1000)
        return (self._time + 1) * STRIDE - 1

    @classmethod
    def open(cls, store: Store, index: int) -> ShardAlertIds:
        """The shard's ids, after those its store holds (counted ids, from before, are spread first)."""
        store.spread_alert_ids(COUNTED, STRIDE, index)
        return cls(index, store.last_alert_id())


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert not yet stored (the store gives it its ``id``)."""

    tenant: str
    uid: int  # the stream's incarnation
    step: int
    body: dict[str, Any]  # the alert without its id

    @property
    def row(self) -> tuple[str, int, int, str]:
        return (self.tenant, self.uid, self.step, json.dumps(self.body))


class AlertFeed:
    """The alerts in the store: kept (``keep``), read (``since``) and trimmed to ``retained`` per tenant."""

    def __init__(self, store: Store, retained: int, telemetry: Telemetry, ids: ShardAlertIds | None = None) -> None:
        self.store, self.retained, self.telemetry = store, retained, telemetry
        self.ids = ids  # a shard's of a sharded server (None: the store counts them)
        self._unsaved: list[NewAlert] = []  # what the store refused, tried again with the next ones
        self._grown: set[str] = set()  # tenants with alerts added since the last trim

    def keep(self, alerts: list[NewAlert]) -> dict[str, list[Alert]]:
        """Store ``alerts``; those stored (not already there), with their ids, per tenant. If the store refuses,
        they wait for the next call (the observations behind them are safe in the log either way)."""
        self._unsaved += alerts
        try:
            given = None if self.ids is None else self.ids.take(len(self._unsaved))  # (refused: not reused)
            ids = self.store.add_alerts([alert.row for alert in self._unsaved], given)
        except StoreUnavailable as exc:
            self.telemetry.write_failed()
            log.warning("alerts not stored yet (%s): %d waiting", exc, len(self._unsaved))
            del self._unsaved[:-UNSAVED_LIMIT]
            return {}
        stored: dict[str, list[Alert]] = {}
        for id_, alert in zip(ids, self._unsaved):
            if id_ is not None:
                stored.setdefault(alert.tenant, []).append({"id": id_, **alert.body})
        self._unsaved.clear()
        self._grown.update(stored)
        return stored

    def since(self, tenant: str, since: int, limit: int) -> list[Alert]:
        """The tenant's alerts after id ``since``, oldest first, at most ``limit``."""
        return [{"id": id_, **json.loads(body)} for id_, body in self.store.alerts(tenant, since, limit)]

    def watermark(self) -> int:
        """Below every alert id this shard gives from now on (a sharded server's; service/sharded.py)."""
        assert self.ids is not None, "only a shard of a sharded server promises its ids"
        return self.ids.watermark()

    def housekeeping(self) -> None:
        """Retry what the store refused; keep each tenant's newest ``retained``."""
        if self._unsaved:
            self.keep([])
        if self._grown:
            try:
                self.store.trim_alerts(sorted(self._grown), self.retained)
                self._grown.clear()
            except StoreUnavailable as exc:
                log.warning("alerts trim failed: %s", exc)


def alerts_of(
    owners: Sequence[StreamState], seqs: Sequence[int], items: Sequence[Any], results: Results
) -> list[NewAlert]:
    """The anomalous results among ``results`` (item k: observation ``seqs[k]`` of ``owners[k]``, applied as
    ``items[k]`` = (key, x, y, ...): the target judged is x in forecast mode, y in explicit mode), in item
    order, each placed in its stream's episodes (``episode``). Run after the results are recorded (a
    forecast's judged prediction is the previous kept result), once per applied observation: it advances
    the streams' episodes."""
    found = [(part.items[row], part, row) for part in results.parts for row in part.anomalous.nonzero()[0].tolist()]
    found.sort(key=lambda alert: alert[0])  # each stream's in the order of its steps
    at = now_iso()
    alerts = []
    for item, part, row in found:
        state, seq, step = owners[item], seqs[item], int(part.steps[row])
        if state.config.target == "next":
            judged = state.results.before(seq)
            prediction, interval = (judged["prediction"], judged["interval"]) if judged else (None, None)
        else:
            prediction, interval = part.predictions[row].tolist(), calibrated(part.intervals[row].tolist())
        kept = state.results.find(seq)
        body = {
            "stream": state.id, "seq": seq, "step": step, "at": at, "ts": kept["ts"] if kept else None,
            "value": _target(state, items[item]), "prediction": prediction, "interval": interval,
            "score": float(part.scores[row]), **episode(state, step),
        }  # fmt: skip
        alerts.append(NewAlert(state.tenant, state.uid, step, body))
    return alerts


def episode(state: StreamState, step: int) -> dict[str, Any]:
    """Alert ``step`` of ``state`` placed in the stream's episodes (service/episodes.py)."""
    opens = opens_episode(state.last_alert, step, state.config.episode_gap)
    if opens:
        state.episode = step
        state.episodes += 1
    state.last_alert = step
    return {"opens": opens, "episode": state.episode}


def openings_of(alerts: list[Alert]) -> list[Alert]:
    """The alerts that open an episode (those kept before episodes were, all: none is hidden)."""
    return [alert for alert in alerts if alert.get("opens") is not False]


def _target(state: StreamState, item: Any) -> list[float]:
    value = item[1] if state.config.target == "next" else item[2]
    return value.tolist() if hasattr(value, "tolist") else list(value)
