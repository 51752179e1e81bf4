"""What the network sees besides a stream's readings: missing values and the time between observations.

``impute_missing``: a sensor with a dead channel sends ``null`` for it (NaN here). The stream still steps:
the entry is filled with that input's last reading (last observation carried forward, 0 before its first
reading), and the network gets one more input per input, 1 where the value was filled, so that it can tell
a filled value from a reading. The filled value is what the stream saw: it enters the inputs' statistics
and, in forecast mode, the last value and the seasonal history; but the 0 before an input's first reading
is no value of it: it joins no statistics, nor does the change from it to the first reading (a channel
that starts late at 1e6 set its statistics' scale for thousands of readings). It is never a target: learning from it
would teach the network the imputation. In forecast mode a reading with a filled entry is learnt from for
its other entries only (the filled outputs count as no error in the step's loss, averaged over all
outputs as ever, so they add nothing to it or to its gradient); it is not judged (no score, no interval
update, no error in the metrics: those compare whole readings).

``elapsed_input``: a stream sampled irregularly feeds ``log(1 + seconds since its previous observation)``
to the network as one more input, standardized online (with ``normalize``) like the inputs. The first
observation has nothing before it: it gets 0 (in training units) and stays out of the statistics.

Everything here runs per block (``fleet``), in order, so a run of observations gives bit for bit the
results of the same observations one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import StreamConfig
from .normalizer import Moments
from .slots import FleetSlots, Rows


@dataclass(frozen=True)
class Seen:
    """One block's readings as the stream takes them: ``x`` (n, T, I) with missing entries filled; ``extra``
    (n, T, E): the network's other inputs (indicators, elapsed time), None if none; ``missing`` (n, T, I):
    which entries were filled (None: the fleet does not impute)."""

    x: np.ndarray
    extra: np.ndarray | None
    missing: np.ndarray | None
    read: np.ndarray | None = None  # (n, T + 1, I): whether each input had a reading by the step before the
    # block (index 0) and by each of its steps; None: every input always has (the fleet does not impute)

    @property
    def gaps(self) -> np.ndarray | None:
        """Which readings (n, T) had an entry filled (None: the fleet does not impute)."""
        return None if self.missing is None else np.asarray(self.missing.any(axis=-1))

    def ahead(self, k: int) -> np.ndarray | None:
        """The network's other inputs for forecasts rolled forward from step ``k`` of the block (n, E): no
        value is missing in a forecast; the time between readings as at step k."""
        if self.extra is None:
            return None
        extra = self.extra[:, k].copy()
        if self.missing is not None:
            extra[:, : self.x.shape[2]] = 0.0
        return extra


def seen(config: StreamConfig, slots: FleetSlots, rows: Rows, x: np.ndarray, ts: np.ndarray | None) -> Seen:
    """The block ``x`` (n, T, I), NaN where missing, with its timestamps ``ts`` (n, T) (Unix seconds)."""
    parts = []
    missing = read = None
    if config.impute_missing:
        x, missing, read = _filled(slots, rows, x)
        parts.append(missing.astype(np.float64))
    if config.elapsed_input:
        assert ts is not None
        parts.append(_elapsed(config, slots, rows, ts)[..., None])
    extra = None if not parts else parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    return Seen(x, extra, missing, read)


def _filled(slots: FleetSlots, rows: Rows, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` with each missing entry replaced by its input's last reading (0 before its first); where they
    were missing; and ``Seen.read``. (``last_seen`` is NaN until an input's first reading; a state saved
    before 2026-12-05 has 0 there, and goes on as then: that input counts as read.)"""
    missing = np.isnan(x)
    last = rows.take(slots.last_seen)
    if missing.any():
        size = x.shape[1]
        filled = np.concatenate([last[:, None], x], axis=1)  # (n, T + 1, I)
        valid = np.concatenate([np.ones_like(missing[:, :1]), ~missing], axis=1)
        at = np.maximum.accumulate(np.where(valid, np.arange(size + 1)[:, None], 0), axis=1)  # the last reading
        x = np.take_along_axis(filled, at, axis=1)[:, 1:]
    rows.put(slots.last_seen, x[:, -1])
    read = ~np.isnan(np.concatenate([last[:, None], x], axis=1))
    rows.put(slots.imputed, rows.take(slots.imputed) + missing.any(axis=-1).sum(axis=1))
    return np.where(read[:, 1:], x, 0.0), missing, read


def _elapsed(config: StreamConfig, slots: FleetSlots, rows: Rows, ts: np.ndarray) -> np.ndarray:
    """log(1 + seconds since the observation before) of each observation (n, T), in training units."""
    before = np.concatenate([rows.take(slots.last_ts)[:, None], ts[:, :-1]], axis=1)
    known = np.isfinite(before)  # (the first observation of a stream has nothing before it)
    value = np.where(known, np.log1p(np.maximum(ts - np.where(known, before, ts), 0.0)), 0.0)
    rows.put(slots.last_ts, ts[:, -1])
    if not config.normalize:
        return value
    moments = Moments(*(rows.take(slots.array(f"dt_{part}")) for part in ("shift", "s1", "s2", "count")))
    history = moments.accumulate(value[..., None], known)
    final = history.final()
    for part, array in (("shift", final.shift), ("s1", final.s1), ("s2", final.s2), ("count", final.count)):
        rows.put(slots.array(f"dt_{part}"), array)
    mean, std = history.scale()
    return np.where(known, (value - mean[:, 1:, 0]) / std[:, 1:, 0], 0.0)
