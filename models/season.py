"""Seasons: the seasonal naive forecast the gate may follow, and the online detection of a stream's period.

For a period s, the forecast of ``x_{t+1}`` made at step t is ``x_t + (x_{t+1-s} - x_{t-s})``: the last
reading plus the change seen one season earlier (the forecast of a seasonal random walk, ARIMA
(0,1,0)(0,1,0)s). Measured against the alternatives the issue named (bench/README.md, "Forecast quality"): the
network fed the seasonally differenced series was far better on strongly seasonal series (0.34 of the
last value's error on airline passengers) but worse on the others; the network fed the value one season
back gained little; the gate choosing between this forecast, the last value and the network, by their
recent errors, kept the gains of the first without its losses. So the network is untouched by seasons.

A stream that does not name its period has it detected: after its first 48, 64, 128, 256, 512 and 1,024
readings, from the autocorrelation of the changes of its first input; the highest local peak at a lag of
at most a third of the readings, if it reaches ``THRESHOLD``, is the period (1: none), used from that
step's forecast on; the one found at 1,024 readings stays.

Readings are kept in a ring per stream (``history``: the reading of step t at row ``(t - 1) % R``).
"""

from __future__ import annotations

import numpy as np

from .config import DETECTION_WINDOW, StreamConfig
from .slots import FleetSlots, Rows

DETECT_AT = (48, 64, 128, 256, 512, DETECTION_WINDOW)
THRESHOLD = 0.3  # the least autocorrelation that counts as a season


def detect(readings: np.ndarray) -> int:
    """The period of a season in ``readings`` (1-D, oldest first), or 1 for none."""
    change = np.diff(readings)
    change = change - change.mean()
    energy = float(change @ change)
    top = len(readings) // 3
    if not energy > 0 or top < 2:
        return 1
    n = len(change)
    acf = np.array([float(change[lag:] @ change[: n - lag]) / energy for lag in range(top + 2)])
    peaks = (acf[2 : top + 1] > acf[1:top]) & (acf[2 : top + 1] >= acf[3 : top + 2]) & (acf[2 : top + 1] >= THRESHOLD)
    if not peaks.any():
        return 1
    lags = np.flatnonzero(peaks) + 2
    return int(lags[np.argmax(acf[lags])])


def anchors(
    config: StreamConfig, slots: FleetSlots, rows: Rows, steps: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The seasonal naive forecasts (n, T, I) made at ``steps`` (n, T), the block's readings ``x`` included
    (NaN where a stream has no season yet, or too few readings), and where the period changed (n, T); the
    readings join the ring, and the periods found at detection points are stored."""
    size = config.history_length
    length = steps.shape[1]
    ring, sl = slots.history, rows.slots
    before = slots.season[sl]
    period = np.repeat(before[:, None], length, axis=1)  # (n, T): the period at each step
    if config.detects_season:
        low, high = int(steps[:, 0].min()), int(steps[:, -1].max())
        for at in DETECT_AT:
            if not low <= at <= high:  # no stream's block holds that step (most blocks)
                continue
            k = at - steps[:, 0]  # the block index of that step
            for i in np.flatnonzero((k >= 0) & (k < length)):
                found = detect(_readings(ring, int(sl[i]), x[i], int(steps[i, 0]), at, size))
                period[i, k[i] :] = found
        slots.season[sl] = period[:, -1]
    seasonal = (period > 1) & (steps - period >= 1)
    if not seasonal.any():
        forecasts = np.full(x.shape, np.nan)
    else:
        s = np.where(seasonal, period, 1)
        one_back, two_back = (
            _reading(ring, sl, x, steps, steps + 1 - s, size),
            _reading(ring, sl, x, steps, steps - s, size),
        )
        forecasts = np.where(seasonal[..., None], x + one_back - two_back, np.nan)
    keep = min(length, size)  # only the last R readings are kept
    ring[sl[:, None], (steps[:, -keep:] - 1) % size] = x[:, -keep:]
    changed = period != np.concatenate([before[:, None], period[:, :-1]], axis=1)
    return forecasts, changed


def _reading(
    ring: np.ndarray, sl: np.ndarray, x: np.ndarray, steps: np.ndarray, at: np.ndarray, size: int
) -> np.ndarray:
    """The readings of steps ``at`` (n, T): from the block ``x`` where they are in it, else from the ring."""
    first = steps[:, :1]
    inside = at >= first
    from_block = x[np.arange(len(x))[:, None], np.clip(at - first, 0, None)]
    from_ring = ring[sl[:, None], (np.maximum(at, 1) - 1) % size]
    return np.where(inside[..., None], from_block, from_ring)


def _readings(ring: np.ndarray, slot: int, x: np.ndarray, first: int, last: int, size: int) -> np.ndarray:
    """The first input's readings of steps 1..``last`` of one stream (its ring, then its block ``x``)."""
    before = np.arange(1, min(first, last + 1))
    kept = ring[slot, (before - 1) % size, 0]
    return np.concatenate([kept, x[: last - first + 1, 0]])
