"""Forecasts of the next H readings (config ``horizon``), each with its own interval, for forecast streams.

After reading t a stream has its forecast of reading t+1 (the result's prediction, with its interval).
The forecasts of t+2..t+H are the same machinery rolled forward on its own forecasts, with nothing learnt
and nothing of the stream changed: the forecast of t+h-1 is fed to the network as if read (standardized
by the statistics as they stand: they do not move), the network steps on from a copy of its carried
state, and what is reported follows the gate's current choice (models/gate.py) among the same candidates
(the previous forecast standing for the last reading; the seasonal naive forecast from the readings kept,
and the forecasts before it where the season reaches past t; the network's own; the drift, added once more
each step ahead; the reversion, pulling each step's forecast toward the level once more). Before anything
was judged, the last value, as for the next reading (a fresh network rolled forward started the h-ahead
intervals' scale from errors of no meaning).

Intervals: per horizon h, the quantile tracker of the next reading's (models/anomaly.py) fed with h-step
errors: each step keeps its forecasts for 2..H ahead (``hz_made``), and reading t judges those made at
t-h for h ahead, before the step's own forecasts are made. Null until a horizon has judged CALIBRATED_AFTER.
While the next reading holds a huge error (models/anomaly.py's ``hold``: a glitch), each horizon's band is made
in a scale kept beside (``_held``), as the next reading's is: a reading of 1e6 among readings of 1013 had made
the bands 2 and 3 readings ahead 2,000x too wide over the next 1,000 readings. A glitch among a horizon's first
errors leaves its scale when its 30th is judged (``_without_early_glitch``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .anomaly import (
    CALIBRATED_AFTER,
    HELD,
    HUGE,
    SCALE_ALPHA,
    WARM,
    early_far,
    first_far,
    mean_of_others,
    quantiles,
    replaced,
    running_var,
    scaled,
    tracked,
    without_first,
)
from .gate import WEIGHTS
from .inputs import Seen
from .slots import Rows

if TYPE_CHECKING:
    from .fleet import Fleet


def roll(
    fleet: Fleet, rows: Rows, step: np.ndarray, reading: Seen, next_forecast: np.ndarray, next_interval: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """After ``reading`` (a block of one) of ``step`` (n,), whose forecast of the next reading is
    ``next_forecast`` (n, O) with ``next_interval`` (n, O, 2): the forecasts of the next H readings (n, H, O)
    and their intervals (n, H, O, 2)."""
    c, s, sl = fleet.config, fleet.slots, rows.slots
    horizon, x = c.horizon, reading.x[:, 0]
    _judge(fleet, rows, step, x, None if reading.gaps is None else reading.gaps[:, 0])
    forecasts = np.empty((len(step), horizon, x.shape[1]))
    forecasts[:, 0] = next_forecast
    network = fleet.roller(rows, reading.ahead(0))
    seen, output = fleet.mode.rollers(rows)  # type: ignore[attr-defined]
    choose = _Choice(fleet, rows, step, x) if c.gate else None
    for h in range(2, horizon + 1):
        prev = forecasts[:, h - 2]
        raw = output(network(seen(prev, forecasts[:, h - 3] if h > 2 else x)), prev)
        forecasts[:, h - 1] = raw if choose is None else choose(forecasts, h, raw)
    s.hz_made[sl, step % horizon] = forecasts[:, 1:]
    scale, lo, hi = _unit(fleet, rows), s.hz_lo[sl], s.hz_hi[sl]
    ready = (s.hz_count[sl] >= CALIBRATED_AFTER)[..., None, None]  # (n, H-1, 1, 1)
    later = forecasts[:, 1:, :, None] + scale[..., None] * np.stack([lo, hi], axis=-1)
    intervals = np.concatenate([next_interval[:, None], np.where(ready, later, np.nan)], axis=1)
    return forecasts, intervals


def _judge(fleet: Fleet, rows: Rows, step: np.ndarray, x: np.ndarray, gaps: np.ndarray | None) -> None:
    """Reading ``x`` judges the forecasts made for it h steps before, for each h in 2..H: the intervals'
    trackers take in those errors (models/anomaly.py's ``tracked``, as the next reading's); a reading with a
    filled entry (``gaps``, models/inputs.py) judges nothing."""
    s, sl, horizon = fleet.slots, rows.slots, fleet.config.horizon
    ahead = np.arange(2, horizon + 1)  # (H-1,)
    at = (step[:, None] - ahead) % horizon  # (n, H-1): the ring place of the step that made each
    e = x[:, None] - s.hz_made[sl[:, None], at, ahead - 2]  # (n, H-1, O)
    now = ((step[:, None] - ahead) >= 1) & np.isfinite(e).all(axis=-1)  # (n, H-1)
    if gaps is not None:
        now &= ~gaps[:, None]
    count, lo, hi, scale = s.hz_count[sl], s.hz_lo[sl], s.hz_hi[sl], s.hz_scale[sl]
    keep = now[..., None]
    unit = _held(fleet, rows, e, count, keep)  # (a hold may start at a reading that judges nothing ahead)
    if not now.any():
        return
    new_lo, new_hi, new_scale = tracked((lo, hi, scale), e, scaled(e, unit), count, quantiles(fleet.config.coverage))
    if (count < CALIBRATED_AFTER).any():
        new_scale = _without_far_first(fleet, rows, e, count, scale, new_scale, keep)
    if (count < WARM).any():
        new_scale = _without_early_glitch(fleet, rows, e, count, new_scale, now)
    s.hz_lo[sl], s.hz_hi[sl] = np.where(keep, new_lo, lo), np.where(keep, new_hi, hi)
    s.hz_scale[sl], s.hz_count[sl] = np.where(keep, new_scale, scale), count + now


def _held(fleet: Fleet, rows: Rows, e: np.ndarray, count: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The scales (n, H-1, O) that this reading's h-step errors ``e`` are scaled in, the horizons' ``count``
    judged before them, taken in where ``keep``: each output's own (``hz_scale``), or while its next reading
    holds a huge error (``qt_left``, after this reading's), those kept beside (``qt_hz_scale``): copied when the
    hold starts, before this reading's errors (the glitch's own), they take each later error but the ones more
    than sqrt(``HUGE``) of them out (the forecasts made from the glitch), with the scales' own weights. When
    the hold is taken back, calibrate makes them the horizons' scales; when it ends for a change, the scales
    that took every error are used again."""
    s, sl = fleet.slots, rows.slots
    left, on, kept, scale = s.qt_left[sl], s.qt_hz_on[sl], s.qt_hz_scale[sl], s.hz_scale[sl]
    starts = ((left == HELD) & ~on)[:, None]
    on = (on & (left > 0))[:, None] | starts
    kept = np.where(starts, scale, kept)
    a = np.abs(e)
    takes = keep & on & ~starts & (a * a <= HUGE * kept * kept)
    weight = np.maximum(1.0 / (count + 1.0), SCALE_ALPHA)[..., None]  # (``tracked``'s)
    unit = np.where(on, kept, scale)
    s.qt_hz_scale[sl], s.qt_hz_on[sl] = np.where(takes, kept + weight * (a - kept), kept), on[:, 0]
    return unit


def _unit(fleet: Fleet, rows: Rows) -> np.ndarray:
    """The scales (n, H-1, O) the bands further ahead are made in (``_held``)."""
    s, sl = fleet.slots, rows.slots
    return np.where(s.qt_hz_on[sl][:, None], s.qt_hz_scale[sl], s.hz_scale[sl])


def _without_far_first(
    fleet: Fleet, rows: Rows, e: np.ndarray, count: np.ndarray, scale: np.ndarray, new_scale: np.ndarray,
    keep: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The scales ``new_scale`` (n, H-1, O) after the errors ``e``, with a far first error dropped where a horizon's
    band starts (its ``CALIBRATED_AFTER``-th error), as the next reading's band drops one (models/anomaly.py):
    a sensor's garbage first reading made every horizon's first error huge, and the bands 10x too wide for
    hundreds of readings. Until then each horizon keeps its first |e| and the plain variance of its |e|s (the
    scale is their plain mean)."""
    s, sl = fleet.slots, rows.slots
    var, first_error, a = s.hz_var[sl], s.hz_first[sl], np.abs(e)
    first, weight = (count == 0)[..., None], (1.0 / (count + 1.0))[..., None]
    delta = a - scale  # (the score's recurrence, models/anomaly.py: the same bits as its plain averages)
    new_var = np.where(first, 0.0, running_var(var, delta, weight))
    young = keep & (count < CALIBRATED_AFTER)[..., None]
    s.hz_var[sl] = np.where(young, new_var, var)
    s.hz_first[sl] = first_error = np.where(keep & first, a, first_error)
    starts = keep & (count == CALIBRATED_AFTER - 1)[..., None]
    far = starts & first_far(new_scale, new_var, first_error, CALIBRATED_AFTER)
    return np.where(far, mean_of_others(new_scale, first_error, CALIBRATED_AFTER), new_scale)


def _without_early_glitch(
    fleet: Fleet, rows: Rows, e: np.ndarray, count: np.ndarray, new_scale: np.ndarray, now: np.ndarray
) -> np.ndarray:
    """The scales ``new_scale`` (n, H-1, O) after the errors ``e`` judged ``now`` (n, H-1), with a glitch among a
    horizon's first ``WARM`` errors and its echoes (models/anomaly.py's ``early_far``) replaced by the mean of
    the others where its ``WARM``-th is judged, and then a far first error as ``without_first`` replaces one:
    the next reading's band holds such a glitch from where it came, but a reading of 1e4 at reading 10 of a
    sine had left the bands 2 and 3 readings ahead 150x too wide over readings 100-300. At once, not held: a
    band's running scale follows a change within ~100 readings anyway. Until then each horizon keeps its first
    |e|s (``hz_early``: the scale is their plain mean)."""
    s, sl = fleet.slots, rows.slots
    rows_at, ahead = np.nonzero(now & (count < WARM))
    s.hz_early[sl[rows_at], ahead, count[rows_at, ahead]] = np.abs(e[rows_at, ahead])
    rows_at, ahead = np.nonzero(now & (count == WARM - 1))
    if not len(rows_at):
        return new_scale
    errors = s.hz_early[sl[rows_at], ahead]  # (k, WARM, O)
    far = early_far(errors, ahead + 1)  # (ahead: 0 for 2 readings ahead)
    mean, var, cleaned = replaced(errors, far)
    mean, _ = without_first(mean, var, cleaned[:, 0], np.ones(mean.shape, dtype=bool))
    new_scale = new_scale.copy()
    new_scale[rows_at, ahead] = np.where(far.any(axis=1), mean, new_scale[rows_at, ahead])
    return new_scale


class _Choice:
    """What the gate would report for reading t+h given the network's raw forecast: its candidate that
    leads now (as ``gate.blend`` chooses, from the errors as they stand: one choice for the whole roll)."""

    def __init__(self, fleet: Fleet, rows: Rows, step: np.ndarray, x: np.ndarray) -> None:
        s, sl = fleet.slots, rows.slots
        self.fleet, self.sl, self.step, self.x = fleet, sl, step, x
        self.seen = (s.gate_count[sl] > 0)[:, None]  # (n, 1)
        err = np.where(self.seen[..., None], s.gate_err[sl], np.nan)  # (n, O, W)
        if fleet.config.history_length:
            err = np.concatenate([err, s.gate_season_err[sl]], axis=-1)
        trailing = np.stack([s.gate_drift_err[sl], s.gate_revert_err[sl]], axis=-1)  # drift and reversion, last
        err = np.concatenate([err, trailing], axis=-1)
        self.choice = np.argmin(np.where(np.isnan(err), np.inf, err), axis=-1)  # (n, O)
        self.drifting, self.reverting = self.choice == err.shape[-1] - 2, self.choice == err.shape[-1] - 1
        self.drift = s.gate_drift[sl]  # (n, O)
        self.level, self.pull = s.gate_revert[sl, :, 0], s.gate_revert[sl, :, 6]  # (n, O)
        self.seasonal = (self.choice >= len(WEIGHTS)) & ~self.drifting & ~self.reverting
        around = np.minimum(self.choice, len(WEIGHTS) - 1)  # (the drift's and reversion's weights are unused)
        self.weight = WEIGHTS[np.where(self.seasonal, self.choice - len(WEIGHTS), around)]

    def __call__(self, forecasts: np.ndarray, h: int, raw: np.ndarray) -> np.ndarray:
        anchor = forecasts[:, h - 2]
        if self.seasonal.any():
            anchor = np.where(self.seasonal, self._seasonal(forecasts, h), anchor)
        picked = anchor + self.weight * (raw - anchor)  # (as gate._around, candidate by candidate)
        picked = np.where(self.choice == len(WEIGHTS) - 1, raw, picked)  # the network's own
        picked = np.where(self.drifting, forecasts[:, h - 2] + self.drift, picked)  # the last forecast + drift
        pulled = forecasts[:, h - 2] + self.pull * (self.level - forecasts[:, h - 2])  # ... or toward the level
        picked = np.where(self.reverting, pulled, picked)
        unproven = np.where(self.seen, raw, forecasts[:, h - 2])  # (nothing judged: the last value, as gate.blend)
        return np.where(self.seen & np.isfinite(picked), picked, unproven)

    def _seasonal(self, forecasts: np.ndarray, h: int) -> np.ndarray:
        """The seasonal naive forecast of reading t+h made from t+h-1 (n, O): reading t+h-1 (here its
        forecast) plus the change one season back; NaN where there is no season or too little history."""
        period = self.fleet.slots.season[self.sl]  # (n,)
        made_at = self.step + h - 1
        ok = (period > 1) & (made_at - period >= 1)
        one_back, two_back = self._reading(forecasts, made_at + 1 - period), self._reading(forecasts, made_at - period)
        return np.where(ok[:, None], forecasts[:, h - 2] + one_back - two_back, np.nan)

    def _reading(self, forecasts: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Reading ``at`` (n,): kept in the history ring up to t, a forecast of this roll after it."""
        ring = self.fleet.slots.history
        kept = ring[self.sl, (np.maximum(at, 1) - 1) % ring.shape[1]]
        rolled = forecasts[np.arange(len(at)), np.clip(at - self.step - 1, 0, forecasts.shape[1] - 1)]
        return np.where((at > self.step)[:, None], rolled, np.where((at == self.step)[:, None], self.x, kept))
